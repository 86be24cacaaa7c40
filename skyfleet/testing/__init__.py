"""Real local servers for Skyfleet's tests and benchmarks.

``servers``: redis-server, nats-server (JetStream), moto_server and the agent app's api and
worker as child processes, each on a free loopback port and stopped by its own pid. ``edge``:
the edge stack's plan, small HTTPS servers playing sites, and the lab DNS server as a process.
Both the test suite (``tests/``) and the benchmark scripts (``benchmarks/``) use them, so neither
imports the other.
"""

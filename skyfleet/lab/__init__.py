"""The embedded lab: the real agent app as several sites on one machine behind a front door.

``skyfleet lab up`` starts, per site, api replicas, a worker, a Redis node with its Sentinel and
a NATS JetStream node; the Redis nodes replicate across sites and the NATS nodes form one
cluster, so a site can be lost without losing sessions or tasks. HAProxy is the front door.
"""

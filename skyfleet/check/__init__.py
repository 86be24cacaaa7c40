"""``skyfleet check``: the offline compliance gate. It plans programs under mocks and asks the
real policy pack for its verdict over the Pulumi Analyzer gRPC protocol, as the engine does."""

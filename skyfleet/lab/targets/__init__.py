"""What the lab runs for each kind of stack, one module per target (as in ``infra/``):
``aws``, ``gcp``, ``onprem`` read a site stack's plan; ``edge`` reads the edge stack's."""

"""Skyfleet's actions and probes, one module per platform: ``lab``, ``aws``, ``gcp``, ``kubernetes``.

Each module declares its faults (a fault and its rollback together, see ``registry``) and its
probes. Drill files name them through ``skyfleet.drills.activity``, which gathers them all.
"""

"""Skyfleet's Pulumi program: one typed spec, four targets (aws, gcp, onprem, edge)."""

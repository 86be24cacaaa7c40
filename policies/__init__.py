"""Skyfleet policy packs."""

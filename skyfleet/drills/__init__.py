"""Failover drills: Chaos Toolkit experiments run under load, measured, and reported."""

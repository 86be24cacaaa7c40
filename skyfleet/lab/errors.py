"""Errors the lab reports to its user; the message always names what is wrong and where."""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab operation could not be done; the message says which part and why."""


class LabConfigError(LabError):
    """A lab config value is invalid; the message names the file (if any) and the field."""

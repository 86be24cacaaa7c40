"""Entry point of the compliance policy pack: the only place that constructs the PolicyPack.

The engine runs this file as `python -m pulumi.policy <engine> .` from the pack's folder, so the
folder is on sys.path and `rules` imports as a top-level package. Constructing the PolicyPack
starts the analyzer gRPC server, prints its port on stdout and blocks.
"""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rules import ALL_RULES, _server

# Offer each resource only to the rules for its type (see rules/_server.py).
_server.install(ALL_RULES)

PolicyPack(
    name="skyfleet-compliance",
    description="Skyfleet compliance rules for AWS, GCP and Kubernetes (CIS, NIST 800-53, SOC 2, PCI DSS).",
    display_name="Skyfleet compliance",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[rule.to_policy() for rule in ALL_RULES],
    provider="multi-cloud",
    tags=["aws", "gcp", "kubernetes", "cis", "nist-800-53", "soc2", "pci-dss"],
)

"""Test tiers, assigned by directory (markers ``unit``, ``integration``, ``lab``):

- ``tests/unit/``: no servers; the code in-process, plans under the Pulumi SDK's mocks, CLIs;
- ``tests/integration/``: against real servers on loopback (redis-server, nats-server,
  moto_server, the policy pack's Analyzer, the Pub/Sub server, podman);
- ``tests/lab/``: the twin of the shipped stacks and its drills (root, serial: timing experiments).

A test outside these directories is refused at collection: move it to the tier it needs.
``tests/support/`` holds what more than one directory uses; no test directory imports another.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "lab")

pytest_plugins = ["tests.support.plans"]


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    outside = []
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(parts[0])
        else:
            outside.append(item.nodeid)
    if outside:
        raise pytest.UsageError(
            f"{len(outside)} test(s) outside the tier directories tests/{{{','.join(TIERS)}}}/ "
            f"(move each to the tier it needs): {', '.join(outside[:10])}"
        )

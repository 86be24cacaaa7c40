"""One policy-pack process for the whole test session (per xdist worker)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.runner import DEFAULT_PACK
from tests.support.gate import Gate


@pytest.fixture(scope="session")
def gate() -> Iterator[Gate]:
    # SKYFLEET_TEST_POLICY_PACK runs the same tests against another pack (e.g. an older version).
    with PolicyPackProcess(
        Path(os.environ.get("SKYFLEET_TEST_POLICY_PACK", DEFAULT_PACK)), timeout=60
    ) as pack:
        yield Gate(pack)

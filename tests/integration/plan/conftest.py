"""Fixtures for the offline plan's program corpus: programs written for these tests, each
exercising a way real programs use the SDK (data sources, computed outputs, remote
components, reads, manifests), planned once per mode and checked by one policy-pack process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.model import StackResult
from skyfleet.check.runner import DEFAULT_PACK, _rules, check_stack
from skyfleet.plan import Plan, plan_stack

PROGRAMS = Path(__file__).resolve().parent / "programs"


@pytest.fixture(scope="session")
def planned() -> Callable[[str, bool], Plan]:
    """``planned(program, preview)``: the program's dev stack, planned once per mode."""
    cache: dict[tuple[str, bool], Plan] = {}

    def get(program: str, preview: bool = False) -> Plan:
        if (program, preview) not in cache:
            cache[(program, preview)] = plan_stack(PROGRAMS / program, "dev", preview=preview)
        return cache[(program, preview)]

    return get


@pytest.fixture(scope="session")
def checked() -> Iterator[Callable[[Plan], StackResult]]:
    """``checked(plan)``: the gate's result for a plan, from one pack process."""
    with PolicyPackProcess(DEFAULT_PACK, timeout=60) as pack:
        info = pack.info()
        rules = {r.id: r for r in _rules(info)}
        yield lambda plan: check_stack(pack, info, rules, plan)

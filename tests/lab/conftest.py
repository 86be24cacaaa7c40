"""The twin of the shipped prod stacks (aws-prod, gcp-prod, onprem-prod behind edge-prod), up
once for the lab package: its tests and drills share it and each leaves it healthy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skyfleet.lab.state import LabState
from tests.support.twin import IS_ROOT, running, twin_config


@pytest.fixture(scope="package")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    if not IS_ROOT:
        pytest.skip("the lab runs every site and pod in namespaces: root")
    with running(twin_config(tmp_path_factory.mktemp("twin"))) as state:
        yield state

"""The ids an ``Idempotency-Key`` stands for: stable per client, apart between clients and kinds."""

from __future__ import annotations

import re

from agent_app.deps import created_id, turn_id
from agent_app.schemas import ID_PATTERN


def test_a_key_names_the_same_record_each_time_and_only_for_its_client() -> None:
    session = created_id("key-a", "k1")
    assert session is not None and re.fullmatch(ID_PATTERN, session)
    assert created_id("key-a", "k1") == created_id("key-a", '"k1"') == session  # quoted form
    assert created_id("key-b", "k1") != session  # another client's same key
    assert created_id("key-a", "k2") != session
    assert created_id("key-a", "k1", "s1") not in (session, created_id("key-a", "k1", "s2"))  # a task
    assert created_id("key-a", None) is None


def test_a_task_and_a_turn_with_one_key_in_one_session_are_different_records() -> None:
    task = created_id("key-a", "k1", "s1")
    turn = turn_id("key-a", "s1", "k1")
    assert turn is not None and task is not None and turn.removeprefix("idem-") != task

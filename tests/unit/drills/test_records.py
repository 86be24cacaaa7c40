"""How the load's reads of a task record count as a task run twice, on reads built by hand."""

from __future__ import annotations

from skyfleet.drills.records import AcceptedTask, turn_marker, turn_markers

RUNNING = {"status": "running", "result": None, "updated_at": 10.0, "attempts": 1}
DONE = {"status": "succeeded", "result": "4", "updated_at": 11.0, "attempts": 1}


def _task() -> AcceptedTask:
    return AcceptedTask("t1", "s1", accepted_at=0.0)


def test_a_read_sent_after_the_final_one_was_answered_that_differs_is_a_second_run() -> None:
    task = _task()
    task.observe(DONE, sent=20.0, completed=20.1)
    task.observe({**RUNNING, "updated_at": 21.0, "attempts": 2}, sent=20.2, completed=20.3)
    assert task.completed_twice
    assert task.changes[0] == "status: 'succeeded' -> 'running'"
    assert task.last_status == "running"


def test_a_slow_read_that_overlapped_the_final_one_is_not_a_second_run() -> None:
    # Sent before the settle, answered after a later read had seen the task done.
    task = _task()
    task.observe(DONE, sent=20.2, completed=20.3)
    task.observe(RUNNING, sent=20.0, completed=21.5)
    assert not task.completed_twice
    assert task.final == DONE
    assert task.last_status == "succeeded"  # the latest-sent read's


def test_the_same_final_record_read_again_is_one_run() -> None:
    task = _task()
    task.observe(RUNNING, sent=19.0, completed=19.1)
    task.observe(DONE, sent=20.0, completed=20.1)
    task.observe(dict(DONE), sent=30.0, completed=30.1)
    assert not task.completed_twice and task.last_status == "succeeded"


def test_a_marker_is_found_whole_never_inside_a_longer_one() -> None:
    text = f"drill {turn_marker(12)}: what is 12 + 2? (after {turn_marker(3)})"
    assert turn_markers(text) == {"sf-turn-12", "sf-turn-3"}
    assert turn_marker(1) not in turn_markers(text)  # though "sf-turn-1" is a substring of it
    assert turn_markers("no marker here, nor in sf-turn-") == set()

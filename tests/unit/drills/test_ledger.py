"""The drill's ledger file: what it records, how it is read back, and who may hold it."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfleet.drills.rollback import LEDGER_FILE, Ledger, LedgerFileError, read_ledger

TARGET = {"skyfleet_target": "stack:aws-dev", "skyfleet_outputs_file": "/abs/outputs.json"}


def ledger_with_one_open_fault(path: Path) -> Ledger:
    ledger = Ledger(path, target=TARGET)
    ledger.hold()
    entry = ledger.applying("ecs:api", "aws_service_scale_to_zero", {"service": "api"})
    ledger.applied(
        "ecs:api",
        "aws_service_scale_to_zero",
        "ECS api scaled 0 (was 3)",
        lambda: None,
        entry=entry,
        saved={"count": 3, "suspended": None},
    )
    return ledger


def test_a_fault_is_on_record_with_what_its_undo_needs_until_it_is_crossed_off(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = ledger_with_one_open_fault(path)
    (fault,) = read_ledger(path)
    assert (fault.entry, fault.state, fault.key, fault.action) == (
        1,
        "applied",
        "ecs:api",
        "aws_service_scale_to_zero",
    )
    assert fault.arguments == {"service": "api"} and fault.target == TARGET
    assert fault.saved == {"count": 3, "suspended": None} and fault.open
    ledger.restored("ecs:api", by="aws_service_restore")
    (fault,) = read_ledger(path)
    assert fault.state == "restored" and not fault.open


def test_a_fault_that_failed_to_apply_is_closed(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = Ledger(path)
    entry = ledger.applying("sg-ingress", "aws_security_group_cut", {})
    ledger.not_applied(entry, RuntimeError("no such group"))
    (fault,) = read_ledger(path)
    assert fault.state == "not applied" and not fault.open


def test_a_last_line_cut_short_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger_with_one_open_fault(path).release()
    with path.open("a") as out:
        out.write('{"event":"restored","entry":1,"by":"x"')  # the process killed mid-write
    (fault,) = read_ledger(path)
    assert fault.state == "applied"
    # Whoever holds the file next cuts it, so what it appends starts a line of its own.
    rollback = Ledger(path)
    rollback.hold(new_drill=False)
    rollback.record({"event": "restored", "entry": 1, "by": "skyfleet drill rollback", "at": 1.0})
    (fault,) = read_ledger(path)
    assert fault.state == "restored"


def test_a_damaged_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger_with_one_open_fault(path).release()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(LedgerFileError, match=rf"{path}:2: not a ledger event"):
        read_ledger(path)
    path.write_text('{"event":"restored","entry":7,"by":"x","at":1}\n')
    with pytest.raises(
        LedgerFileError, match=rf"{path}:1: not a ledger event: no fault 7 was started before"
    ):
        read_ledger(path)


def test_a_held_ledger_is_refused_to_anyone_else(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = ledger_with_one_open_fault(path)
    with pytest.raises(LedgerFileError, match="still running"):
        Ledger(path).hold(new_drill=False)
    ledger.release()
    assert [f.entry for f in Ledger(path).hold(new_drill=False)] == [1]


def test_a_new_drill_is_refused_where_an_earlier_one_left_faults_open(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger_with_one_open_fault(path).release()
    with pytest.raises(
        LedgerFileError,
        match=r"left 1 fault\(s\) open here \(aws_service_scale_to_zero\): run `skyfleet drill rollback",
    ):
        Ledger(path).hold()
    # Once undone, the folder takes a new drill, whose faults are numbered after the earlier ones.
    done = Ledger(path)
    done.hold(new_drill=False)
    done.record({"event": "restored", "entry": 1, "by": "skyfleet drill rollback", "at": 1.0})
    done.release()
    again = Ledger(path, target=TARGET)
    again.hold()
    assert again.applying("sg-ingress", "aws_security_group_cut", {}) == 2


def test_what_an_undo_needs_must_be_plain_json_even_without_a_file() -> None:
    ledger = Ledger()
    entry = ledger.applying("k", "some_fault", {})
    with pytest.raises(TypeError, match="not JSON serializable"):
        ledger.applied("k", "some_fault", "d", lambda: None, entry=entry, saved={"when": object()})
    assert [f.key for f in ledger.pending()] == ["k"]  # in memory still: the safety net undoes it


def test_a_rollback_of_a_ledger_that_is_not_there_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """A mistyped report folder must not read as "nothing to undo"."""
    for where in (tmp_path / "reprot" / LEDGER_FILE, tmp_path / LEDGER_FILE):
        with pytest.raises(LedgerFileError, match="no such ledger"):
            Ledger(where).hold(new_drill=False)
        assert not where.exists()


def test_each_fault_is_crossed_off_on_its_own(tmp_path: Path) -> None:
    """Two faults under one key: the first undone, the second still applied (its undo failed, or
    the drill was killed before it) stays open on record."""
    path = tmp_path / LEDGER_FILE
    ledger = ledger_with_one_open_fault(path)
    entry = ledger.applying("ecs:api", "aws_service_scale_to_zero", {"service": "api"})
    ledger.applied("ecs:api", "aws_service_scale_to_zero", "again", lambda: None, entry=entry, saved={})
    first, _ = ledger.pending()
    ledger.crossed_off(first, by="aws_service_restore")
    assert [(f.entry, f.state) for f in read_ledger(path)] == [(1, "restored"), (2, "applied")]


def test_a_fault_cut_short_while_being_applied_is_named(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.applying("k8s-deny", "k8s_deny_all", {})  # Ctrl-C during its calls: neither outcome
    failed = ledger.applying("sg-ingress", "aws_security_group_cut", {})
    ledger.not_applied(failed, RuntimeError("denied"))
    assert ledger.cut_short() == ["k8s_deny_all"] and ledger.pending() == []
    assert [f.state for f in read_ledger(tmp_path / LEDGER_FILE)] == ["applying", "not applied"]

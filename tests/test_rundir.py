"""The run directory: atomic writes (no temp files, old content kept on failure), finished steps keyed by
their inputs' hash, and an event log whose torn last line is skipped and cannot swallow the next event."""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from ioa import rundir
from ioa.config import RunConfig
from ioa.errors import IoaError
from ioa.rundir import (
    RunDir,
    atomic_write_text,
    inputs_hash,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


def test_atomic_write_creates_parents_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second — ünïcode")
    assert target.read_text(encoding="utf-8") == "second — ünïcode"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; a run directory's files must be readable like any other file."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~rundir._UMASK


def test_json_and_jsonl_round_trip(tmp_path: Path) -> None:
    @dataclass
    class Row:
        a: int
        where: Path

    write_json(tmp_path / "x.json", {"path": Path("p/q"), "set": {3, 1, 2}, "cfg": RunConfig(name="n")})
    data = read_json(tmp_path / "x.json")
    assert data["path"] == "p/q"
    assert data["set"] == [1, 2, 3]
    assert data["cfg"]["name"] == "n"
    write_jsonl(tmp_path / "rows.jsonl", [Row(1, Path("a")), {"b": "é"}])
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"a": 1, "where": "a"}, {"b": "é"}]
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
    assert leftovers(tmp_path) == []


def test_failed_replace_keeps_old_content_and_says_free_disk_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    write_json(target, {"v": 1})

    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir.os, "replace", full)
    with pytest.raises(IoaError) as info:
        write_json(target, {"v": 2})
    assert "free disk space" in str(info.value)
    assert str(target) in info.value.problem
    assert "No space left on device" in info.value.problem
    assert read_json(target) == {"v": 1}
    assert leftovers(tmp_path) == []


def test_failed_write_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.jsonl"
    write_jsonl(target, [{"i": 0}])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(IoaError, match="free disk space"):
        write_jsonl(target, [{"i": 1}, {"i": 2}])
    assert read_jsonl(target) == [{"i": 0}]
    assert leftovers(tmp_path) == []


def test_inputs_hash_is_stable_and_sensitive() -> None:
    a = inputs_hash("diagnose", {"b": 1, "a": 2}, RunConfig().identifier)
    assert a == inputs_hash("diagnose", {"a": 2, "b": 1}, RunConfig().identifier)  # key order does not matter
    assert len(a) == 16
    changed = RunConfig().identifier.model_copy(update={"tau_gap": 0.31})
    assert a != inputs_hash("diagnose", {"b": 1, "a": 2}, changed)
    assert a != inputs_hash("diagnose", {"b": 1, "a": 3}, RunConfig().identifier)


def test_is_done_follows_the_inputs_hash(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert not run.is_done("diagnose", "h1")
    run.mark_done("diagnose", "h1", targets=["add"])
    assert run.is_done("diagnose", "h1")
    assert not run.is_done("diagnose", "h2")  # changed inputs: the step reruns
    assert not run.is_done("plan", "h1")

    again = RunDir(tmp_path / "run")  # a rerun reads state.json from disk
    assert again.is_done("diagnose", "h1")
    again.mark_done("plan", "p1")
    again.mark_done("diagnose", "h2")
    state = read_json(tmp_path / "run" / "state.json")
    assert state["steps"]["diagnose"]["inputs"] == "h2"
    assert "targets" not in state["steps"]["diagnose"]  # a new record replaces the old one
    assert state["steps"]["plan"]["inputs"] == "p1"
    assert not again.is_done("diagnose", "h1")
    assert leftovers(tmp_path) == []


def test_mark_done_on_a_full_disk_keeps_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path)
    run.mark_done("a", "1")

    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir.os, "replace", full)
    with pytest.raises(IoaError, match="free disk space"):
        run.mark_done("b", "2")
    monkeypatch.undo()
    assert run.is_done("a", "1")
    assert not run.is_done("b", "2")


def test_events_round_trip(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert list(run.events()) == []
    run.event("diagnosed", targets=["add", "mul"], where=Path("x"))
    run.event("stage", index=0)
    events = list(run.events())
    assert [e["event"] for e in events] == ["diagnosed", "stage"]
    assert events[0]["targets"] == ["add", "mul"]
    assert events[0]["where"] == "x"
    assert events[0]["time"] <= events[1]["time"]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.event("one")
    with open(tmp_path / "events.jsonl", "a", encoding="utf-8") as f:
        f.write('{"time": 1, "event": "tw')  # the process died mid-write
    assert [e["event"] for e in run.events()] == ["one"]


def test_event_after_a_torn_line_is_not_lost(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.event("one")
    with open(tmp_path / "events.jsonl", "a", encoding="utf-8") as f:
        f.write('{"time": 1, "event": "tw')
    run.event("resumed")  # the rerun's first event
    run.event("two")
    assert [e["event"] for e in run.events()] == ["one", "resumed", "two"]
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1])


def test_event_on_a_full_disk_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(IoaError, match="free disk space"):
        run.event("x")


def test_rundir_paths(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "new" / "run")
    assert run.path.is_dir()
    assert run / "diagnosis" == tmp_path / "new" / "run" / "diagnosis"
    assert run.cache_path.name == "cache.sqlite"

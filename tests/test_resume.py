"""Crash safety of `ioa run`: SIGKILL during synthesis and during training, rerun, same result.

Real models (0.5B teacher, SmolLM2 student) and real training, on a deliberately tiny config. Slow.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ioa.models.cache import CallCache
from ioa.models.registry import embedded, installed_path
from ioa.rundir import RunDir

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(3600)]

TEACHER, STUDENT = "qwen2.5-coder-0.5b", "smollm2-135m"


def _config(runs: Path, name: str) -> Path:
    config = {
        "name": name,
        "runs_dir": str(runs),
        "teacher": {"spec": TEACHER, "max_tokens": 96},
        "student": {"spec": STUDENT, "max_tokens": 48},
        "domain": {"name": "arithmetic", "modules": ["single_digit_add", "multi_digit_add"]},
        "identifier": {"probes_per_module": 4},
        # A gate no student passes (perfect score needed) makes every stage train twice: stage data, then
        # remedial data. So there is always a finished training before the second one, where we kill.
        "organizer": {"gate_items_per_module": 8, "gate_mode": "point", "tau_mastery": 1.0,
                      "max_remediation_rounds": 1},
        "adapter": {"representation": "bare", "samples_per_module": 20},
        "training": {"epochs": 1},
        "evaluation": {"benchmark_items_per_module": 4, "student_max_tokens": 24},
    }
    path = runs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _ioa(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ioa.cli", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _events(run: Path) -> list[dict]:
    return list(RunDir(run).events()) if run.exists() else []


def _kill_when(proc: subprocess.Popen[bytes], ready, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"ioa run ended before the kill point: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _dataset(run: Path) -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted((run / "stages").glob("*/data.jsonl")):
        for line in path.read_text().splitlines():
            d = json.loads(line)
            rows.append((d["item_id"], d["completion"], d["lineage"]["prompt_hash"]))
    return rows


@pytest.fixture(scope="module")
def models_installed() -> None:
    for name in (TEACHER, STUDENT):
        if installed_path(embedded(name)) is None:
            pytest.skip(f"{name} is not installed (ioa models install {name})")


def test_sigkill_during_synthesis_and_training_then_resume(tmp_path: Path, models_installed: None) -> None:
    # Reference: one uninterrupted run.
    reference = _ioa(_config(tmp_path, "reference"))
    assert reference.wait(timeout=3600) == 0, reference.stderr.read().decode()[-3000:]

    config = _config(tmp_path, "crashy")
    run = tmp_path / "crashy"

    # 1. Killed during synthesis: the first chunk of the stage's teacher replies is cached, no data file yet.
    cache_path = run / "cache.sqlite"

    def synthesising() -> bool:
        if not cache_path.exists() or list(run.glob("stages/*/data.main.jsonl")):
            return False
        with sqlite3.connect(cache_path) as db:
            (n,) = db.execute("SELECT COUNT(*) FROM calls WHERE request LIKE '%answer keys%'").fetchone()
        return n > 0

    _kill_when(_ioa(config), synthesising)

    # 2. Killed during training, after an earlier training finished: a later student is being written.
    def training_again() -> bool:
        finished = any(e["event"] == "trained" for e in _events(run))
        return finished and any((run / "stages").glob("*/student*.tmp-*"))

    _kill_when(_ioa(config), training_again)
    trained_before = {e["at"] for e in _events(run) if e["event"] == "trained"}
    assert trained_before
    n_before = len(_events(run))

    # 3. Rerun to the end.
    final = _ioa(config)
    assert final.wait(timeout=3600) == 0, final.stderr.read().decode()[-3000:]

    events = _events(run)
    rerun = events[n_before:]
    assert any(e["event"] == "run_done" for e in events)
    # Same final data set as the uninterrupted run (every teacher call is deterministic and cached).
    assert _dataset(run) == _dataset(tmp_path / "reference")
    assert _dataset(run), "the run produced no training data"
    # No teacher (or student) call was ever paid twice across the three processes.
    assert CallCache(cache_path).repeated_calls() == 0
    # Training that had finished before the kill was reused or skipped by the rerun, never repeated.
    assert not [e for e in rerun if e["event"] == "trained" and e["at"] in trained_before and not e["reused"]]
    assert (run / "student" / "config.json").exists()
    assert json.loads((run / "final.json").read_text())["comparisons"]

"""The training entry point runs under `accelerate launch` (one CPU process), as it would on GPUs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ioa.models.registry import embedded, installed_path

pytestmark = pytest.mark.models


def test_training_under_accelerate_launch(tmp_path: Path) -> None:
    if installed_path(embedded("smollm2-135m")) is None:
        pytest.skip("smollm2-135m is not installed (ioa models install smollm2-135m)")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    data = tmp_path / "data.jsonl"
    examples = [{"prompt": f"What is {a} + {b}?", "completion": f"#### {a + b}"} for a, b in [(2, 3), (4, 4), (1, 7)]]
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    config = tmp_path / "training.yaml"
    config.write_text("epochs: 1\nbatch_size: 4\nwarmup_ratio: 0.0\nmax_seq_len: 128\n")
    out = tmp_path / "student"
    result = subprocess.run(
        [accelerate, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "ioa.training", "--student", "smollm2-135m", "--data", str(data),
         "--out", str(out), "--config", str(config)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["method"] == "full" and summary["steps"] == 1 and not summary["reused"]
    assert (out / "model.safetensors").exists() and (out / "ioa_train.json").exists()

"""Loop overhead: wall time of a small `ioa run` vs the sum of its model phases, measured in the same run.

Model phases, from the run's own events: probing (teacher + student generation), synthesis (teacher
generation), training (the whole `train` call: load, optimise, save), evaluation (student generation),
conversion (the GGUF student dequantised into Hugging Face weights, once per run).
Everything else (planning, verification, dedup, decontamination, file I/O, imports) is loop overhead;
the target is ≤ 5% of the wall time.

Also measured side by side: batched student evaluation vs one prompt at a time (target ≥ 5×).

    python benchmarks/loop_overhead.py [--config FILE] [--out benchmarks/results/loop_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SMALL_RUN = {
    "name": "overhead",
    "teacher": {"spec": "qwen2.5-coder-0.5b", "max_tokens": 160},
    "student": {"spec": "smollm2-135m", "max_tokens": 64},
    "domain": {"name": "arithmetic", "modules": ["single_digit_add", "multi_digit_add"]},
    "identifier": {"probes_per_module": 6},
    "organizer": {"gate_items_per_module": 12, "gate_mode": "point", "max_remediation_rounds": 1},
    "adapter": {"representation": "bare", "samples_per_module": 16},
    "training": {"epochs": 1},
    "evaluation": {"benchmark_items_per_module": 12, "student_max_tokens": 32},
}


def model_seconds(events: list[dict]) -> dict[str, float]:
    phases = {"probing": 0.0, "synthesis": 0.0, "training": 0.0, "evaluation": 0.0, "conversion": 0.0}
    for e in events:
        if e["event"] == "student_converted":  # the GGUF student dequantised into trainable HF weights
            phases["conversion"] += e.get("seconds", 0.0)
        elif e["event"] == "diagnosed":
            phases["probing"] += e.get("seconds", 0.0)
        elif e["event"] == "synthesised":
            phases["synthesis"] += e.get("seconds", 0.0)
        elif e["event"] == "trained":
            phases["training"] += e.get("call_seconds", e.get("seconds", 0.0))
        elif e["event"] == "evaluated":
            phases["evaluation"] += e.get("seconds", 0.0)
    return phases


def loop_overhead(config: dict, workdir: Path) -> dict[str, object]:
    config = {**config, "runs_dir": str(workdir)}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ioa.cli", "run", str(path)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    events = [json.loads(line) for line in (workdir / config["name"] / "events.jsonl").read_text().splitlines()]
    phases = model_seconds(events)
    models = sum(phases.values())
    # torch/transformers are first imported inside the conversion phase; charge that import to the loop.
    imports = library_import_seconds()
    return {"wall_s": wall, "model_phases_s": phases, "model_s": models,
            "overhead_s": wall - models, "overhead_fraction": (wall - models) / wall,
            "library_import_s": imports, "overhead_with_imports_fraction": (wall - models + imports) / wall}


def library_import_seconds(rounds: int = 3) -> float:
    """Median time of a fresh process importing torch and transformers (minus a bare interpreter start)."""
    def timed(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    libs = statistics.median(timed("import torch, transformers; from transformers import AutoModelForCausalLM")
                             for _ in range(rounds))
    bare = statistics.median(timed("pass") for _ in range(rounds))
    return libs - bare


def batched_vs_sequential(student_dir: Path, n: int = 32, batch: int = 32) -> dict[str, object]:
    """The same prompts through HFModel one at a time and batched, interleaved rounds, medians."""
    from ioa.domains.arithmetic import ArithmeticDomain
    from ioa.models.base import ChatRequest, SamplingParams
    from ioa.models.hf import HFModel

    domain = ArithmeticDomain()
    items = [i for m in ("single_digit_add", "multi_digit_add") for i in domain.items(m, n // 2, 7, "benchmark")]
    requests = [ChatRequest.of(domain.messages(i), SamplingParams(max_tokens=32)) for i in items]
    one, many = HFModel(student_dir, batch_size=1), HFModel(student_dir, batch_size=batch)
    one.generate(requests[:1]), many.generate(requests[:1])  # load both before timing
    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    for _ in range(2):
        for label, model in (("sequential", one), ("batched", many)):
            t = time.perf_counter()
            model.generate(requests)
            times[label].append(time.perf_counter() - t)
    seq, bat = statistics.median(times["sequential"]), statistics.median(times["batched"])
    return {"prompts": len(requests), "batch_size": batch, "sequential_s": seq, "batched_s": bat,
            "speedup": seq / bat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="run config (default: a small built-in one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loop_overhead.json"))
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text()) if args.config else SMALL_RUN
    with tempfile.TemporaryDirectory(prefix="ioa-overhead-") as tmp:
        overhead = loop_overhead(config, Path(tmp))
        batching = batched_vs_sequential(Path(tmp) / config["name"] / "student")
    result = {"loop": overhead, "student_evaluation": batching}
    print(f"wall {overhead['wall_s']:.1f} s, model phases {overhead['model_s']:.1f} s "
          f"{ {k: round(v, 1) for k, v in overhead['model_phases_s'].items()} }, "
          f"overhead {overhead['overhead_s']:.1f} s = {100 * overhead['overhead_fraction']:.1f}%; with the "
          f"torch/transformers import ({overhead['library_import_s']:.1f} s) charged to the loop: "
          f"{100 * overhead['overhead_with_imports_fraction']:.1f}% (target ≤ 5%)")
    print(f"student evaluation, {batching['prompts']} prompts: sequential {batching['sequential_s']:.1f} s, "
          f"batched {batching['batched_s']:.1f} s: {batching['speedup']:.1f}× (target ≥ 5×)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""`ioa bench CONFIG`: IOA against compute-matched baselines and its own ablations (DESIGN §6).

Methods × seeds in one harness: the same teacher (loaded once), the same student, the same seed data and
the same budget. Per seed, full IOA runs first and sets the budget (N verified samples, T teacher tokens;
the rule is in ioa.matching); then every other method. Each finished student is scored on the same
held-out items (the domain's benchmark split drawn with a bench-level seed no run uses, GSM8K test's first
items, HumanEval for the code domain), the teacher once per benchmark (retention = student / teacher).

benches/NAME/
  bench.yaml        the resolved bench config (a rerun with another config is refused)
  cache.sqlite      one call cache for every method and seed: identical teacher calls are paid once
  student_base/     the student in Hugging Face format, shared by every method
  teacher.json      the teacher's per-item results on every benchmark
  seed-S/METHOD/    a run directory per cell; cell.json once the cell is finished (a rerun skips it)
  bench.json        every cell's spend, budget check and per-item correctness, and the summary
  bench.md          the tables; events.jsonl

Resumable: every file is written atomically; a rerun skips finished cells, and inside a cell the run loop,
the call cache and training reuse what was done. After a cell is finished its intermediate students are
deleted (each is ≈ 0.5 GB); its final student is kept.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ioa.adapter import Sample
from ioa.baselines import BASELINES, Context, MethodData, check_supported, llm2llm, self_instruct, standard_distillation
from ioa.config import BENCH_METHODS, BenchConfig, DataBudgetConfig, RunConfig, dump_config
from ioa.dedup import Decontaminator
from ioa.diagnosis import load_diagnosis, open_teacher, probe_items, selected_modules
from ioa.domains import get_domain
from ioa.domains.base import Domain, Item
from ioa.errors import ConfigError, IoaError
from ioa.evaluation import fresh_items, load_student_model, score
from ioa.matching import BudgetCheck, Spend, check_budget, loop_spend
from ioa.models.base import ChatModel
from ioa.models.cache import CachedModel, CallCache
from ioa.probing import ProbeRow
from ioa.run import QuietReporter, Reporter, ensure_base_student, open_loop, publish_student, teach
from ioa.rundir import RunDir, atomic_write_text, read_json, write_json, write_jsonl
from ioa.stats import mean_std, paired_bootstrap
from ioa.teaching import as_examples
from ioa.training import train

log = logging.getLogger(__name__)

ABLATIONS = ("no_identifier", "no_organizer", "no_adapter")
TITLES = {
    "ioa": "IOA (full)",
    "undistilled": "undistilled student",
    "standard": "standard distillation",
    "self_instruct": "Self-Instruct-style",
    "llm2llm": "LLM2LLM-style",
    "no_identifier": "IOA without Identifier",
    "no_organizer": "IOA without Organizer",
    "no_adapter": "IOA without Adapter",
}
BUDGET_RULE = (
    "Per seed, full IOA runs first; its verified training samples N and teacher tokens T (every teacher reply "
    "it used, diagnosis probing included, cached or not) set the budget. Every other method writes data until "
    "it has N verified samples or its next teacher call could pass T, whichever comes first; ablations put N "
    "into their first pass over the modules they teach (N/k each). Checked per method: tokens ≤ (1+t)·T and "
    "samples within t of N (t = tolerance); a method that reached N on fewer tokens is reported as cheaper, "
    "one that spent T first as token-limited. The undistilled student spends nothing."
)


# ----------------------------------------------------------------------------------------- benchmarks


@dataclass(frozen=True)
class Benchmark:
    """Items every student and the teacher are scored on, with the answer lengths allowed."""

    name: str
    domain: Domain
    items: list[Item]
    student_max_tokens: int
    teacher_max_tokens: int


def build_benchmarks(cfg: BenchConfig) -> list[Benchmark]:
    run, bcfg = cfg.run, cfg.benchmarks
    domain = get_domain(run.domain)
    out: list[Benchmark] = []
    fixed = getattr(domain, "benchmark_items", None)
    if callable(fixed):  # a fixed benchmark (code: HumanEval), in its published order
        items = list(fixed(bcfg.humaneval_items))
        tokens = int(getattr(domain, "max_tokens", run.evaluation.student_max_tokens))
        name = "humaneval" if domain.name == "code" else domain.name
        out.append(Benchmark(name, domain, items, tokens, max(tokens, run.teacher.max_tokens)))
    elif domain.name != "gsm8k":  # a procedural domain: its benchmark split, fresh draw
        taught = [m.id for m in selected_modules(domain, run.domain.modules)]
        extra = [m.id for m in selected_modules(domain, bcfg.extra_modules) if m.id not in taught] \
            if bcfg.extra_modules else []
        items = fresh_items(domain, taught + extra, bcfg.domain_items_per_module, bcfg.seed, "benchmark")
        out.append(Benchmark(domain.name, domain, items, run.evaluation.student_max_tokens, run.teacher.max_tokens))
    if bcfg.gsm8k or domain.name == "gsm8k":
        out.append(gsm8k_benchmark(cfg, domain))
    return out


def gsm8k_benchmark(cfg: BenchConfig, domain: Domain) -> Benchmark:
    """GSM8K test: its first `gsm8k_items` problems in file order (all with None), modules by keyword tags."""
    from ioa.domains.gsm8k import GSM8KDomain, load_jsonl

    bcfg = cfg.benchmarks
    path = bcfg.gsm8k_path or (cfg.run.domain.data_path if domain.name == "gsm8k" else None)
    gsm8k = domain if isinstance(domain, GSM8KDomain) else GSM8KDomain(path)
    records = load_jsonl(gsm8k.data_path / "test.jsonl")
    if bcfg.gsm8k_items is not None:
        records = records[: bcfg.gsm8k_items]
    items = [Item(id=f"gsm8k-test-{r.line}", module=r.module, prompt=r.question, answer=r.answer, level=r.level)
             for r in records]
    return Benchmark("gsm8k", gsm8k, items, bcfg.gsm8k_max_tokens, bcfg.teacher_gsm8k_max_tokens)


def scored(rows: Sequence[ProbeRow]) -> dict[str, Any]:
    """Per-item correctness (in benchmark order), accuracy and per-module [correct, n]."""
    modules: dict[str, list[int]] = {}
    for r in rows:
        c = modules.setdefault(r.module, [0, 0])
        c[0] += int(r.correct)
        c[1] += 1
    correct = [int(r.correct) for r in rows]
    return {"accuracy": sum(correct) / len(correct) if correct else 0.0, "correct": correct, "modules": modules}


# ------------------------------------------------------------------------------------------ the bench


@dataclass
class Bench:
    cfg: BenchConfig
    dir: RunDir
    cache: CallCache
    teacher: ChatModel
    base: str  # the shared base student (HF directory)
    benchmarks: list[Benchmark]
    reporter: Reporter

    def cell_dir(self, seed: int, method: str) -> Path:
        return self.dir / f"seed-{seed}" / method

    def score_student(self, student: str, label: str) -> dict[str, Any]:
        model = load_student_model(Path(student), self.cache)
        model.model.batch_size = self.cfg.run.evaluation.batch_size  # type: ignore[attr-defined]
        out = {}
        for bm in self.benchmarks:
            _, rows = score(model, bm.domain, bm.items, bm.student_max_tokens,
                            on_progress=self.reporter.bar(f"{label}: {bm.name}", len(bm.items)))
            out[bm.name] = scored(rows)
        return out


def bench_methods(cfg: BenchConfig) -> list[str]:
    """IOA first (it sets every seed's budget), then the others in the configured order."""
    return ["ioa", *[m for m in cfg.methods if m != "ioa"]]


def run_bench(
    cfg: BenchConfig, reporter: Reporter | None = None, *, teacher: ChatModel | None = None
) -> dict[str, Any]:
    """Run (or resume) the bench and write bench.json and bench.md; returns bench.json's content."""
    reporter = reporter or QuietReporter()
    bench_dir = RunDir(cfg.bench_dir)
    _check_same_config(cfg, bench_dir)
    atomic_write_text(bench_dir / "bench.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cache = CallCache(bench_dir.cache_path)
    if teacher is None:
        teacher = open_teacher(cfg.run, bench_dir, cache)
    elif not isinstance(teacher, CachedModel):
        teacher = CachedModel(teacher, cache)
    domain = get_domain(cfg.run.domain)
    for method in cfg.methods:
        check_supported(method, domain)
    base = _base_student(cfg, bench_dir)
    bench = Bench(cfg, bench_dir, cache, teacher, base, build_benchmarks(cfg), reporter)
    teacher_scores = _reference_scores(bench, "teacher.json", "teacher")
    base_scores = _reference_scores(bench, "base.json", "student")
    bench_dir.event("bench_started", methods=bench_methods(cfg), seeds=cfg.seeds,
                    benchmarks={b.name: len(b.items) for b in bench.benchmarks})
    for seed in range(cfg.seeds):
        budget: Spend | None = None
        for method in bench_methods(cfg):
            cell = run_cell(bench, method, seed, budget)
            if method == "ioa":
                budget = Spend.from_dict(cell["spend"])
    # Every finished cell of these seeds, also those of methods an earlier invocation ran (--methods).
    cells = [read_json(path) for seed in range(cfg.seeds) for method in BENCH_METHODS
             if (path := bench.cell_dir(seed, method) / "cell.json").exists()]
    result = summarise(cfg, bench.benchmarks, teacher_scores, base_scores, cells)
    write_json(bench_dir / "bench.json", result)
    atomic_write_text(bench_dir / "bench.md", markdown(result))
    bench_dir.event("bench_done", cells=len(cells))
    return result


def _check_same_config(cfg: BenchConfig, bench_dir: RunDir) -> None:
    """A bench directory belongs to one config; more seeds or methods may be added later."""
    path = bench_dir / "bench.yaml"
    if not path.exists():
        return
    old = yaml.safe_load(path.read_text()) or {}
    new = cfg.model_dump(mode="json")
    # What only changes the reporting (or which cells exist) may differ; what shapes a cell may not.
    for key in ("seeds", "methods", "name", "benches_dir", "bootstrap"):
        old.pop(key, None)
        new.pop(key, None)
    for d in (old, new):
        d.get("budget", {}).pop("on_shortfall", None)
    if old != new:
        raise ConfigError(f"{bench_dir.path} was made with another bench config",
                          "give the bench a new name (or --out), or delete that directory")


def _base_student(cfg: BenchConfig, bench_dir: RunDir) -> str:
    spec = Path(cfg.run.student.spec)
    if spec.is_dir() and (spec / "config.json").exists():
        return str(spec)
    return ensure_base_student(cfg.run, bench_dir)


def _reference_scores(bench: Bench, file: str, who: str) -> dict[str, Any]:
    """The teacher's (retention) or the base student's (forgetting) results, once per bench."""
    path = bench.dir / file
    if path.exists():
        return read_json(path)
    if who == "student":
        out = bench.score_student(bench.base, "base student")
    else:
        out = {}
        for bm in bench.benchmarks:
            _, rows = score(bench.teacher, bm.domain, bm.items, bm.teacher_max_tokens, role="teacher",
                            on_progress=bench.reporter.bar(f"teacher: {bm.name}", len(bm.items)))
            out[bm.name] = scored(rows)
    write_json(path, out)
    return out


# ------------------------------------------------------------------------------------------- a cell


def cell_config(cfg: BenchConfig, method: str, seed: int, base: str, budget: Spend | None = None,
                taught: int | None = None) -> RunConfig:
    """The run config of one method × seed: the bench's run config with its seed, the shared base student
    and, for an ablation, its switch and the budget (N samples, T tokens; N/k samples per taught module)."""
    run = cfg.run
    update: dict[str, Any] = {
        "name": method,
        "runs_dir": cfg.bench_dir / f"seed-{seed}",
        "seed": run.seed + seed,
        "student": run.student.model_copy(update={"spec": base}),
        "training": run.training.model_copy(update={"seed": run.training.seed + seed}),
    }
    if method == "no_identifier":
        update["identifier"] = run.identifier.model_copy(update={"enabled": False})
    elif method == "no_organizer":
        update["organizer"] = run.organizer.model_copy(update={"staged": False})
    elif method == "no_adapter":
        update["adapter"] = run.adapter.model_copy(update={"enabled": False})
    if method in ABLATIONS:
        if budget is None or not taught:
            raise ValueError(f"ablation {method} needs IOA's budget and the number of modules it teaches")
        per_module = max(1, math.ceil(budget.samples / taught))
        adapter = update.get("adapter", run.adapter)
        update["adapter"] = adapter.model_copy(update={"samples_per_module": per_module})
        update["budget"] = DataBudgetConfig(max_samples=budget.samples, max_teacher_tokens=budget.teacher_tokens,
                                            fill_rounds=run.budget.fill_rounds)
    return run.model_copy(update=update)


def run_cell(bench: Bench, method: str, seed: int, budget: Spend | None) -> dict[str, Any]:
    """One method × seed: its student, spend, budget check and benchmark results (cell.json); skipped when
    already finished."""
    out = bench.cell_dir(seed, method)
    done = out / "cell.json"
    if done.exists():
        return read_json(done)
    if method != "ioa" and budget is None:
        raise IoaError(f"{method} (seed {seed}) has no budget: IOA must run first", "report this as a bug")
    cfg = bench.cfg
    bench.reporter.info(f"seed {seed}: {TITLES[method]}")
    bench.dir.event("cell_started", method=method, seed=seed)
    start = time.perf_counter()
    misses = getattr(bench.teacher, "misses", 0)
    taught = _taught(bench, method, seed)
    config = cell_config(cfg, method, seed, bench.base, budget, taught) if method in ABLATIONS \
        else cell_config(cfg, method, seed, bench.base)
    if method in ("ioa", *ABLATIONS):
        student, spend = _loop_cell(bench, config)
    else:
        assert budget is not None
        student, spend = _baseline_cell(bench, method, config, budget)
    if method == "ioa":
        if spend.samples == 0:
            raise IoaError(f"IOA trained on no samples for seed {seed}, so there is no budget to match",
                           "choose domain.modules the student lacks (see `ioa diagnose`)")
        check = check_budget(method, spend, spend, reference=True)
    else:
        assert budget is not None
        check = check_budget(method, spend, budget, cfg.budget.tolerance, cfg.budget.on_shortfall,
                             exempt=method == "undistilled")
    seconds = time.perf_counter() - start
    scoring = time.perf_counter()
    results = bench.score_student(student, f"seed {seed} {method}")
    cell = {
        "method": method, "seed": seed, "spend": spend.to_dict(), "budget": check.to_dict(),
        "seconds": round(seconds, 1), "eval_seconds": round(time.perf_counter() - scoring, 1),
        "teacher_calls_paid": getattr(bench.teacher, "misses", 0) - misses,
        "training": training_spend(RunDir(out)),
        "student": _relative(Path(student), bench.dir.path), "results": results,
    }
    write_json(done, cell)
    bench.dir.event("cell_done", method=method, seed=seed, budget=check.text(), seconds=cell["seconds"])
    bench.reporter.info(f"seed {seed}: {TITLES[method]}: {check.text()}; "
                        + ", ".join(f"{b} {100 * r['accuracy']:.1f}%" for b, r in results.items()))
    _prune(out, Path(student))
    return cell


def training_spend(run: RunDir) -> dict[str, float]:
    """The student-side compute a cell used, from its `trained` events: trainings, examples shown (all epochs
    counted once per training), optimiser steps, tokens through the model, seconds. Not part of the budget
    match (samples and teacher tokens are), but reported beside it: a curriculum trains more often."""
    seen: dict[str, dict[str, Any]] = {}
    for e in run.events():
        if e.get("event") == "trained":
            seen[str(e.get("at"))] = e  # a resumed cell logs a reused training again: count it once
    return {"trainings": len(seen), "examples": sum(int(e.get("examples", 0)) for e in seen.values()),
            "steps": sum(int(e.get("steps", 0)) for e in seen.values()),
            "tokens": sum(int(e.get("tokens", 0)) for e in seen.values()),
            "seconds": round(sum(float(e.get("seconds", 0.0)) for e in seen.values()), 1)}


def _taught(bench: Bench, method: str, seed: int) -> int | None:
    """How many modules an ablation teaches: all selected ones without the Identifier, else IOA's targets."""
    if method not in ABLATIONS:
        return None
    if method == "no_identifier":
        return len(selected_modules(get_domain(bench.cfg.run.domain), bench.cfg.run.domain.modules))
    return len(load_diagnosis(RunDir(bench.cell_dir(seed, "ioa"))).targets)


def _loop_cell(bench: Bench, config: RunConfig) -> tuple[str, Spend]:
    """IOA or an ablation: the run loop, with the shared teacher and cache."""
    loop = open_loop(config, bench.reporter, teacher=bench.teacher, cache=bench.cache)  # type: ignore[arg-type]
    teach(loop)
    student = publish_student(loop)
    return str(student), loop_spend(loop.run.path, config.budget.max_samples)


def _baseline_cell(bench: Bench, method: str, config: RunConfig, budget: Spend) -> tuple[str, Spend]:
    run = RunDir(config.run_dir)
    atomic_write_text(run / "config.yaml", dump_config(config))
    if method == "undistilled":
        return bench.base, Spend(0, 0, "plan")
    domain = get_domain(config.domain)
    modules = {m.id: m for m in selected_modules(domain, config.domain.modules)}
    protected = [i.prompt for i in probe_items(domain, list(modules.values()), config.identifier.probes_per_module,
                                               config.seed)]
    protected += [i.prompt for bm in bench.benchmarks for i in bm.items]
    decontaminator = Decontaminator(protected, config.adapter.decontam_ngram)
    ctx = Context(method, config, domain, modules, bench.teacher, decontaminator, budget.samples,
                  budget.teacher_tokens, bench.cfg.baselines)

    def trainer(samples: Sequence[Sample], out: Path) -> str:
        if not samples:
            return bench.base
        label = f"{method}: training ({len(samples)} samples)"
        bar = bench.reporter.bar(label, 1)
        result = train(bench.base, as_examples(samples), out, config.training)
        bar(1)
        run.event("trained", at=_relative(out, run.path), examples=len(samples), final_loss=result.final_loss,
                  seconds=result.seconds, reused=result.reused, steps=result.steps, tokens=result.tokens)
        return str(out)

    def examiner(student: str, items: Sequence[Item]) -> list[bool]:
        model = load_student_model(Path(student), bench.cache)
        model.model.batch_size = config.evaluation.batch_size  # type: ignore[attr-defined]
        _, rows = score(model, domain, items, config.evaluation.student_max_tokens,
                        on_progress=bench.reporter.bar(f"{method}: student on its seed problems", len(items)))
        return [r.correct for r in rows]

    if method == "llm2llm":
        data, student = llm2llm(ctx, run.path, trainer, examiner)
        _write_data(run, data)
        return student, data.spend
    data = standard_distillation(ctx) if method == "standard" else self_instruct(ctx)
    _write_data(run, data)
    # Checked before the training, so a mismatch costs no training time.
    check_budget(method, data.spend, budget, bench.cfg.budget.tolerance, bench.cfg.budget.on_shortfall)
    return trainer(data.samples, run / "student"), data.spend


def _write_data(run: RunDir, data: MethodData) -> None:
    write_jsonl(run / "data.jsonl", data.samples)
    write_json(run / "data.accounting.json", data.accounting())
    run.event("synthesised", kept=len(data.samples), generated=data.generated, drops=dict(data.drops),
              teacher_tokens=data.teacher_tokens, stopped_by=data.stopped_by)


def _relative(path: Path, root: Path) -> str:
    """A path for bench.json: relative to the bench directory where it lies inside it."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _prune(cell: Path, keep: Path) -> None:
    """Delete a finished cell's intermediate students (model weights) except the final one."""
    keep = keep.resolve()
    for weights in sorted(cell.rglob("model.safetensors")):
        model_dir = weights.parent.resolve()
        if model_dir != keep and keep not in model_dir.parents and model_dir.is_relative_to(cell.resolve()):
            shutil.rmtree(model_dir, ignore_errors=True)
    for tmp in cell.rglob("*.tmp-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ the statistics


def forgetting(before: Mapping[str, float], after: Mapping[str, float], teacher: Mapping[str, float],
               tau_mastery: float) -> float | None:
    """The largest accuracy drop, before → after, over the modules the student had mastered before
    (accuracy / teacher accuracy ≥ τ_mastery, as the gate's point rule); 0 when none dropped, None when no
    module was mastered before."""
    mastered = [m for m, b in before.items() if teacher.get(m, 0) > 0 and b / teacher[m] >= tau_mastery - 1e-9]
    if not mastered:
        return None
    return max(0.0, max(before[m] - after.get(m, 0.0) for m in mastered))


def largest_drop(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """The largest accuracy drop, before → after, over every module (0 when none fell)."""
    return max([0.0, *(b - after.get(m, 0.0) for m, b in before.items())])


def _acc(counts: Mapping[str, Sequence[int]]) -> dict[str, float]:
    return {m: c / n if n else 0.0 for m, (c, n) in counts.items()}


def summarise(cfg: BenchConfig, benchmarks: Sequence[Benchmark], teacher: Mapping[str, Any],
              base: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """bench.json: config, benchmarks (item ids), teacher and base-student results, every cell, and the
    summary tables."""
    methods = list(dict.fromkeys(c["method"] for c in cells))
    by = {(c["method"], c["seed"]): c for c in cells}
    seeds = sorted({c["seed"] for c in cells})
    names = [b.name for b in benchmarks]
    summary: dict[str, Any] = {}
    for method in methods:
        mine = [by[(method, s)] for s in seeds if (method, s) in by]
        entry: dict[str, Any] = {"seeds": [c["seed"] for c in mine], "benchmarks": {}, "modules": {}}
        for name in names:
            accs = [c["results"][name]["accuracy"] for c in mine]
            mean, std = mean_std(accs)
            t_acc = teacher[name]["accuracy"]
            entry["benchmarks"][name] = {"mean": mean, "std": std, "per_seed": accs,
                                         "retention": mean / t_acc if t_acc > 0 else None}
            modules = sorted({m for c in mine for m in c["results"][name]["modules"]})
            entry["modules"][name] = {
                m: mean_std([_acc(c["results"][name]["modules"]).get(m, 0.0) for c in mine])[0] for m in modules
            }
        first = names[0]  # the domain's own held-out items (GSM8K for the gsm8k domain)
        drops = [forgetting(_acc(base[first]["modules"]), _acc(c["results"][first]["modules"]),
                            _acc(teacher[first]["modules"]), cfg.run.organizer.tau_mastery) for c in mine]
        known = [d for d in drops if d is not None]
        entry["forgetting"] = sum(known) / len(known) if known else None
        entry["largest_drop"] = mean_std([largest_drop(_acc(base[first]["modules"]),
                                                       _acc(c["results"][first]["modules"])) for c in mine])[0]
        entry["samples"] = mean_std([c["spend"]["samples"] for c in mine])[0]
        entry["teacher_tokens"] = mean_std([c["spend"]["teacher_tokens"] for c in mine])[0]
        entry["token_ratio"] = _mean_or_none([c["budget"]["token_ratio"] for c in mine])
        entry["budget_status"] = sorted({c["budget"]["status"] for c in mine})
        entry["training_tokens"] = _mean_or_none([c.get("training", {}).get("tokens") for c in mine])
        entry["training_steps"] = _mean_or_none([c.get("training", {}).get("steps") for c in mine])
        entry["seconds"] = mean_std([c["seconds"] for c in mine])[0]
        entry["seconds_total"] = sum(c["seconds"] for c in mine)
        summary[method] = entry
    significance: dict[str, Any] = {}
    for method in methods:
        if method == "ioa":
            continue
        common = [s for s in seeds if ("ioa", s) in by and (method, s) in by]
        if not common:
            continue
        significance[method] = {
            name: paired_bootstrap([by[("ioa", s)]["results"][name]["correct"] for s in common],
                                   [by[(method, s)]["results"][name]["correct"] for s in common],
                                   cfg.bootstrap.resamples, cfg.bootstrap.seed).to_dict()
            for name in names
        }
    return {
        "name": cfg.name,
        "budget_rule": BUDGET_RULE,
        "config": cfg.model_dump(mode="json"),
        "methods": methods,
        "seeds": seeds,
        "benchmarks": {b.name: {"items": [i.id for i in b.items], "student_max_tokens": b.student_max_tokens,
                                "teacher_max_tokens": b.teacher_max_tokens} for b in benchmarks},
        "teacher": dict(teacher),
        "base_student": dict(base),
        "budgets": {str(s): by[("ioa", s)]["spend"] for s in seeds if ("ioa", s) in by},
        "cells": [dict(c) for c in cells],
        "summary": summary,
        "significance": significance,
    }


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# -------------------------------------------------------------------------------------------- bench.md


def _pct(mean: float, std: float | None) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * mean:.1f}"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _p(p: float, resamples: int) -> str:
    return f"< {1 / resamples:.0e}" if p == 0 else f"{p:.3f}"


def markdown(result: Mapping[str, Any]) -> str:
    """bench.md: the main table, per-module accuracy, spend per seed, and how it was computed."""
    cfg = result["config"]
    names = list(result["benchmarks"])
    summary, sig = result["summary"], result["significance"]
    resamples = cfg["bootstrap"]["resamples"]
    seeds = result["seeds"]
    lines = [f"# Bench {result['name']}", "",
             f"Teacher {cfg['run']['teacher']['spec']}, student {cfg['run']['student']['spec']}, domain "
             f"{cfg['run']['domain']['name']} ({', '.join(cfg['run']['domain']['modules']) or 'all modules'}); "
             f"seeds {', '.join(map(str, seeds))}. Accuracy in % as mean ± std over seeds (std with ≥ 2 seeds).",
             ""]
    head = ["method"]
    for n in names:
        head += [f"{n} (%)", f"{n} retention", f"p vs IOA ({n})"]
    head += ["forgetting", "largest drop", "samples", "teacher tokens (× IOA)", "budget", "training tokens (× IOA)",
             "time / seed"]
    ioa_training = summary.get("ioa", {}).get("training_tokens")
    rows = []
    for method, s in summary.items():
        row = [TITLES.get(method, method)]
        for n in names:
            b = s["benchmarks"][n]
            p = sig.get(method, {}).get(n)
            row += [_pct(b["mean"], b["std"]), _num(b["retention"]), _p(p["p_value"], resamples) if p else "–"]
        ratio = f" (×{s['token_ratio']:.2f})" if s["token_ratio"] is not None else ""
        row += [_num(s["forgetting"], "{:.1%}"), f"{s['largest_drop']:.1%}", f"{s['samples']:.0f}",
                f"{s['teacher_tokens']:,.0f}{ratio}",
                ", ".join(x.replace("_", "-") for x in s["budget_status"]),
                _training_cell(s.get("training_tokens"), ioa_training), f"{s['seconds'] / 60:.1f} min"]
        rows.append(row)
    lines += _table(head, rows)
    teacher = result["teacher"]
    lines += ["", "Teacher: " + ", ".join(f"{n} {100 * teacher[n]['accuracy']:.1f}% "
                                          f"({sum(teacher[n]['correct'])}/{len(teacher[n]['correct'])})"
                                          for n in names) + "."]
    for n in names:
        modules = sorted({m for s in summary.values() for m in s["modules"][n]})
        if not modules:
            continue
        lines += ["", f"## Per-module accuracy on {n} (%, mean over seeds)", ""]
        t_acc = _acc(teacher[n]["modules"])
        rows = [[TITLES.get(m, m), *(f"{100 * s['modules'][n].get(x, 0.0):.1f}" for x in modules)]
                for m, s in summary.items()]
        rows.append(["teacher", *(f"{100 * t_acc.get(x, 0.0):.1f}" for x in modules)])
        lines += _table(["method", *modules], rows)
    lines += ["", "## Budget per seed", "", BUDGET_RULE, ""]
    rows = []
    for c in result["cells"]:
        b = BudgetCheck.from_dict(c["budget"])
        rows.append([str(c["seed"]), TITLES.get(c["method"], c["method"]), str(b.samples), f"{b.budget_samples}",
                     f"{b.teacher_tokens:,}", f"{b.budget_tokens:,}", _num(b.token_ratio),
                     b.status.replace("_", "-"), str(c.get("teacher_calls_paid", "")), f"{c['seconds'] / 60:.1f}"])
    lines += _table(["seed", "method", "samples", "N", "teacher tokens", "T", "tokens / T", "status",
                     "teacher calls paid", "minutes"], rows)
    items = ", ".join(f"{n}: {len(result['benchmarks'][n]['items'])} items" for n in names)
    lines += ["", "## How this was computed", "",
              f"- Benchmarks ({items}), the same items for every method, seed and the teacher; the domain's "
              f"held-out items come from its benchmark split with seed {cfg['benchmarks']['seed']} (no run uses "
              "it), GSM8K from the first items of test.jsonl in file order. Retention = student / teacher.",
              f"- p vs IOA: paired bootstrap over items (each item's IOA − method difference averaged over the "
              f"seeds both ran), {resamples} resamples, seed {cfg['bootstrap']['seed']}; one-sided, H1: IOA "
              "better; p = share of resamples in which IOA is not better (ties count half).",
              "- Forgetting: the largest drop, base student → method, on a module of the first benchmark that the "
              f"base student had mastered (accuracy / teacher ≥ {cfg['run']['organizer']['tau_mastery']}), mean "
              "over seeds; – when it had mastered none. Largest drop: the same over every module.",
              "- Training tokens: tokens through the student in every training of the cell (all epochs, "
              "calibration pilots and LLM2LLM's intermediate rounds included); not part of the budget match.",
              "- Time: data and training of the attempt that finished the cell, without the final scoring (a "
              "resumed cell shows only its last attempt); teacher calls paid: calls the shared cache did not "
              "already hold."]
    return "\n".join(lines) + "\n"


def _training_cell(tokens: float | None, ioa: float | None) -> str:
    """Tokens through the student in training, and their ratio to IOA's ("–" for a bench run before this
    was recorded)."""
    if tokens is None:
        return "–"
    return f"{tokens:,.0f}" + (f" (×{tokens / ioa:.2f})" if ioa else "")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


__all__ = [
    "ABLATIONS",
    "BASELINES",
    "BENCH_METHODS",
    "BUDGET_RULE",
    "Benchmark",
    "build_benchmarks",
    "cell_config",
    "forgetting",
    "markdown",
    "run_bench",
    "summarise",
]

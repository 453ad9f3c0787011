"""`ioa run`: the IOA loop (DESIGN §5), resumable at every step.

    diagnose → plan stages
    for each stage:
        synthesise adapted data (+ replay, + bridge) → fine-tune S → gate
        while the gate fails and rounds < R_max: remedial data → fine-tune → gate
        bridging data; forgetting guard; snapshot; re-estimate the graph; re-plan the remaining stages
    final evaluation on held-out items → report

Every step writes its outputs atomically before `curriculum.json` records it as done, and every model
call is cached, so a rerun after a crash repeats no teacher call and no finished training.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ioa.adapter import Representation, Sample, SynthesisResult, pilot_families, pilot_family
from ioa.config import RunConfig, dump_config
from ioa.dedup import Decontaminator
from ioa.diagnosis import (
    Diagnosis,
    diagnose,
    edge_dict,
    open_domain,
    open_teacher,
    probe_items,
    selected_modules,
)
from ioa.domains import get_domain, is_seed_domain
from ioa.domains.base import Domain, Module
from ioa.evaluation import Comparison, fresh_items, load_student_model, pooled, score
from ioa.graph import Edge
from ioa.identifier import build_graph, gap, measured_edges
from ioa.matching import TokenBudget, loop_spend
from ioa.models.base import ChatModel
from ioa.models.cache import CachedModel, CallCache
from ioa.models.resolve import load_cached
from ioa.organizer import (
    TERMINAL,
    Action,
    GateResult,
    Stage,
    StageState,
    best_gate,
    bridging_plan,
    difficulty,
    forgetting_check,
    gate_item_count,
    mastery_gate,
    next_action,
    plan_stages,
    record,
    remediation_plan,
    replan,
    replay_plan,
    review_plan,
    start_level,
)
from ioa.probing import ProbeRow, accuracy_by_level
from ioa.rundir import RunDir, atomic_write_text, read_json, read_jsonl, write_json, write_jsonl
from ioa.stats import Proportion
from ioa.teaching import DataRequest, as_examples, derived_seed, synthesise
from ioa.training import train

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """How the loop tells a person what it is doing (the CLI shows it with rich)."""

    def bar(self, description: str, total: int) -> Callable[[int], None]: ...

    def info(self, message: str) -> None: ...


class QuietReporter:
    def bar(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n: None

    def info(self, message: str) -> None:
        log.info(message)


# ------------------------------------------------------------------------------------------ the plan


@dataclass
class Curriculum:
    """The loop's memory (curriculum.json): stages, their life-cycle states and what each produced."""

    stages: list[Stage]
    states: dict[int, StageState] = field(default_factory=dict)
    student: str = ""  # HF directory of the current student
    levels: dict[str, int] = field(default_factory=dict)  # ladder entry level per module
    representation: dict[str, dict[str, Any]] = field(default_factory=dict)  # calibration choice per module
    snapshots: list[dict[str, list[int]]] = field(default_factory=list)  # module -> [correct, n]
    mastered: list[str] = field(default_factory=list)
    pending_replay: dict[str, int] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False
    starts: dict[int, str] = field(default_factory=dict)  # stage index -> the student it started from

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [s.to_dict() for s in self.stages],
            "states": {str(i): s.to_dict() for i, s in self.states.items()},
            "student": self.student,
            "levels": self.levels,
            "representation": self.representation,
            "snapshots": self.snapshots,
            "mastered": self.mastered,
            "pending_replay": self.pending_replay,
            "edges": self.edges,
            "stopped": self.stopped,
            "starts": {str(i): p for i, p in self.starts.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Curriculum:
        return cls(
            stages=[Stage.from_dict(s) for s in d["stages"]],
            states={int(i): StageState.from_dict(s) for i, s in d["states"].items()},
            **{k: d[k] for k in ("student", "levels", "representation", "snapshots", "mastered",
                                 "pending_replay", "edges", "stopped")},
            starts={int(i): p for i, p in d.get("starts", {}).items()},  # absent in runs made before it
        )

    def next_stage(self) -> Stage | None:
        if self.stopped:
            return None
        for stage in self.stages:
            state = self.states.get(stage.index)
            if state is None or next_action(state) not in TERMINAL:
                return stage
        return None


def _proportions(snapshot: dict[str, list[int]]) -> dict[str, Proportion]:
    return {m: Proportion(c, n) for m, (c, n) in snapshot.items()}


def _snapshot_dict(acc: dict[str, Proportion]) -> dict[str, list[int]]:
    return {m: [p.correct, p.n] for m, p in acc.items()}


# --------------------------------------------------------------------------------------- the teacher


@dataclass
class Loop:
    """One run: its config, directory, domain, teacher, and the curriculum being carried out."""

    config: RunConfig
    run: RunDir
    domain: Domain
    modules: dict[str, Module]
    teacher: CachedModel
    cache: CallCache
    diagnosis: Diagnosis
    curriculum: Curriculum
    reporter: Reporter
    decontaminator: Decontaminator
    # A budgeted run's token meter: what it learned about call sizes carries over from one request to the next.
    tokens: TokenBudget = field(default_factory=TokenBudget)

    @property
    def student(self) -> str:
        """Path of the current student (stored relative to the run directory, so a run dir can move)."""
        return str(self.run / self.curriculum.student)

    def set_student(self, path: Path | str) -> None:
        self.curriculum.student = _stored_path(Path(path), self.run)

    @property
    def teacher_acc(self) -> dict[str, Proportion]:
        return {s.module: s.teacher for s in self.diagnosis.scores}

    def save(self) -> None:
        write_json(self.run / "curriculum.json", self.curriculum.to_dict())

    def stage_dir(self, stage: Stage) -> Path:
        return self.run / f"stages/{stage.index + 1:02d}"

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, student_dir: str, modules: Sequence[str], n: int, seed: int, split: str,
                 label: str) -> dict[str, Proportion]:
        return self.evaluate_rows(student_dir, modules, n, seed, split, label)[0]

    def evaluate_rows(self, student_dir: str, modules: Sequence[str], n: int, seed: int, split: str,
                      label: str) -> tuple[dict[str, Proportion], list[ProbeRow]]:
        """Accuracy per module, and every scored item (for per-level reads)."""
        model = load_student_model(Path(student_dir), self.cache)
        model.model.batch_size = self.config.evaluation.batch_size  # type: ignore[attr-defined]
        items = fresh_items(self.domain, modules, n, seed, split)  # type: ignore[arg-type]
        start = time.perf_counter()
        acc, rows = score(model, self.domain, items, self.config.evaluation.student_max_tokens,
                          on_progress=self.reporter.bar(label, len(items)))
        self.run.event("evaluated", label=label, items=len(items), seconds=time.perf_counter() - start,
                       cached=model.hits, generated=model.misses)
        return acc, rows

    def snapshot(self, label: str) -> dict[str, Proportion]:
        """One evaluation of S on every module's probe items (the Eq. 3 population)."""
        cfg = self.config
        acc = self.evaluate(self.student, list(self.modules), cfg.identifier.probes_per_module,
                            cfg.seed, "probe", f"snapshot: {label}")
        self.curriculum.snapshots.append(_snapshot_dict(acc))
        return acc

    # -- data ------------------------------------------------------------------------------------------
    def write_data(self, requests: Sequence[DataRequest], path: Path, seed: int, lineage: dict[str, Any],
                   label: str) -> list[Sample]:
        """Synthesise (cached teacher calls), then write data + accounting atomically."""
        samples_left, budget = self.data_budget()
        if samples_left is not None:
            requests = _capped(requests, samples_left)
        total = sum(r.count for r in requests)
        start = time.perf_counter()
        result = synthesise(self.teacher, self.domain, self.modules, requests, self.config.adapter,
                            self.decontaminator, seed, {"run": self.config.name, **lineage},
                            on_progress=self.reporter.bar(label, total), budget=budget,
                            fill_rounds=self.config.budget.fill_rounds if self.config.budget.active else 0)
        write_jsonl(path, result.samples)
        write_json(path.with_suffix(".accounting.json"), _accounting(result, requests))
        self.run.event("synthesised", file=str(path.relative_to(self.run.path)), kept=len(result.samples),
                       generated=result.generated, drops=dict(result.drops), teacher_tokens=result.teacher_tokens,
                       seconds=time.perf_counter() - start)
        return result.samples

    def data_budget(self) -> tuple[int | None, TokenBudget | None]:
        """Verified samples and teacher tokens still allowed by config.budget (None, None: no budget)."""
        cfg = self.config.budget
        if not cfg.active:
            return None, None
        spent = loop_spend(self.run.path)
        samples = None if cfg.max_samples is None else max(0, cfg.max_samples - spent.samples)
        limit = cfg.max_teacher_tokens
        self.tokens.left = None if limit is None else max(0, limit - spent.teacher_tokens)
        self.tokens.exhausted = False
        return samples, self.tokens

    def budget_spent(self) -> bool:
        """True once a budgeted run has all its samples or held back a teacher call for lack of tokens."""
        cfg = self.config.budget
        return cfg.active and loop_spend(self.run.path, cfg.max_samples).stopped_by != "plan"

    def train_on(self, samples: Sequence[Sample], out: Path, label: str, start_from: str | None = None) -> str:
        """Fine-tune `start_from` (default: the current student) on `samples` into `out`."""
        source = start_from or self.student
        if not samples:
            self.reporter.info(f"{label}: no verified samples, nothing to train")
            self.run.event("empty_training_set", at=str(out.relative_to(self.run.path)))
            return source
        bar = self.reporter.bar(label, 1)
        start = time.perf_counter()
        result = train(source, as_examples(samples), out, self.config.training)
        bar(1)
        # seconds: the optimisation itself; call_seconds: with loading and saving the model.
        self.run.event("trained", at=str(out.relative_to(self.run.path)), examples=len(samples),
                       final_loss=result.final_loss, seconds=result.seconds, reused=result.reused,
                       call_seconds=time.perf_counter() - start, steps=result.steps, tokens=result.tokens,
                       start=_stored_path(Path(source), self.run))
        return str(out)


def _capped(requests: Sequence[DataRequest], n: int) -> list[DataRequest]:
    """The requests, in order, cut down to n samples in all."""
    out = []
    for r in requests:
        out.append(replace(r, count=min(r.count, n)))
        n -= out[-1].count
    return out


def _accounting(result: SynthesisResult, requests: Sequence[DataRequest]) -> dict[str, Any]:
    per_module: dict[str, dict[str, int]] = {}
    for r in requests:
        per_module.setdefault(r.module, {"requested": 0, "kept": 0})["requested"] += r.count
    for s in result.samples:
        per_module.setdefault(s.module, {"requested": 0, "kept": 0})["kept"] += 1
    return {"generated": result.generated, "kept": len(result.samples), "drops": dict(result.drops),
            "repairs": dict(result.repairs),
            "teacher_tokens": result.teacher_tokens, "modules": per_module,
            "budget_exhausted": result.budget_exhausted}


def _load_samples(path: Path) -> list[Sample]:
    return [Sample.from_dict(d) for d in read_jsonl(path)] if path.exists() else []


# -------------------------------------------------------------------------------------- set-up


def open_loop(config: RunConfig, reporter: Reporter, *, teacher: CachedModel | None = None,
              cache: CallCache | None = None) -> Loop:
    """A run's loop. `teacher` and `cache` (given together by `ioa bench`) share one loaded teacher and one
    call cache between runs; by default the run has its own (runs/NAME/cache.sqlite)."""
    run = RunDir(config.run_dir)
    atomic_write_text(run / "config.yaml", dump_config(config))
    # A built-in domain's config errors show before any model loads; a seed-data domain needs the teacher
    # (its taxonomy, and the judge for judge scoring).
    known = None if is_seed_domain(config.domain) else get_domain(config.domain)
    student: ChatModel | None = None
    if cache is None:
        cache = CallCache(run.cache_path)
    else:  # the student's probe answers go to the shared cache too
        student = load_cached(config.student.spec, cache, config.student.n_ctx)
    teacher = teacher or open_teacher(config, run, cache)
    domain = known or open_domain(config, run, teacher, reporter.bar)
    modules = {m.id: m for m in selected_modules(domain, config.domain.modules)}
    diagnosis = diagnose(config, run, progress=reporter.bar, teacher=teacher, student=student)
    # Training data must not overlap what measures the student: the probes and the final benchmark items.
    # (Gate items come from their own split, which the domain keeps disjoint from training.)
    protected = probe_items(domain, list(modules.values()), config.identifier.probes_per_module, config.seed)
    protected += fresh_items(domain, list(modules), config.evaluation.benchmark_items_per_module,
                             derived_seed(config.seed, "benchmark"), "benchmark")
    decontaminator = Decontaminator([i.prompt for i in protected], config.adapter.decontam_ngram)
    path = run / "curriculum.json"
    if path.exists():
        curriculum = Curriculum.from_dict(read_json(path))
    else:
        curriculum = new_curriculum(config, run, diagnosis, domain)
    return Loop(config, run, domain, modules, teacher, cache, diagnosis, curriculum, reporter, decontaminator)


def teaching_targets(config: RunConfig, diagnosis: Diagnosis) -> list[str]:
    """What the run teaches: the Identifier's targets, or without it every selected module (uniform share)."""
    if config.identifier.enabled:
        return diagnosis.targets
    return [s.module for s in diagnosis.scores]


def plan_curriculum(config: RunConfig, diagnosis: Diagnosis, max_level: int) -> tuple[list[Stage], dict[str, int]]:
    """The stages and each target's entry level on the difficulty ladder. Without the Organizer: one stage
    holding every target (it is trained once, ungated)."""
    targets = teaching_targets(config, diagnosis)
    gaps = {s.module: s.gap for s in diagnosis.scores}
    if config.organizer.staged:
        stages = plan_stages(targets, diagnosis.edges, gaps, config.organizer.tau_zpd)
    else:
        mean = sum(difficulty(gaps[t]) for t in targets) / len(targets) if targets else 0.0
        stages = [Stage(0, tuple(targets), mean, 0, note="one stage, no gate (Organizer off)")] if targets else []
    levels = {}
    for module in targets:
        by_level = accuracy_by_level([r for r in diagnosis.rows if r.role == "student"], module)
        levels[module] = start_level(by_level, max_level, config.organizer.tau_level, config.organizer.level_mode)
    return stages, levels


def new_curriculum(config: RunConfig, run: RunDir, diagnosis: Diagnosis, domain: Domain) -> Curriculum:
    stages, levels = plan_curriculum(config, diagnosis, domain.levels)
    student = ensure_base_student(config, run)
    curriculum = Curriculum(stages=stages, student=_stored_path(Path(student), run), levels=levels,
                            edges=[edge_dict(e) for e in diagnosis.edges])
    return curriculum


def _stored_path(path: Path, run: RunDir) -> str:
    """Inside the run directory: relative to it (the run dir can be moved); elsewhere: absolute (a relative
    path outside would otherwise be read back relative to the run directory)."""
    return str(path.relative_to(run.path)) if path.is_relative_to(run.path) else str(path.resolve())


def ensure_base_student(config: RunConfig, run: RunDir) -> str:
    """The initial student in Hugging Face format (the weights training starts from and 'before' uses)."""
    from ioa.training import load_student, save_model

    base = run / "student_base"
    if (base / "config.json").exists():
        return str(base)
    spec = config.student.spec
    if Path(spec).is_dir() and (Path(spec) / "config.json").exists():
        return spec
    start = time.perf_counter()
    model, tokenizer = load_student(spec)
    tmp = run / "student_base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    os.replace(tmp, base)
    run.event("student_converted", spec=spec, seconds=time.perf_counter() - start)  # GGUF → HF weights
    return str(base)


# -------------------------------------------------------------------------------------- the stage


def data_request(loop: Loop, module: str, count: int, level: int | None = None, *, easier: int = 0,
                 representation: Representation | None = None) -> DataRequest:
    """`count` samples of `module` on the ladder from `level` (default: the module's current entry level)."""
    return DataRequest(module, count, loop.curriculum.levels.get(module, 1) if level is None else level,
                       representation or _representation(loop, module), easier=easier,
                       rungs=loop.config.organizer.ladder_rungs)


def stage_requests(loop: Loop, stage: Stage, per_module: int) -> list[DataRequest]:
    return [data_request(loop, m, per_module) for m in stage.modules]


def _representation(loop: Loop, module: str) -> Representation:
    if not loop.config.adapter.enabled:  # plain teacher solutions, shown as they are written
        return "plain"
    cfg = loop.config.adapter
    if cfg.representation != "auto":
        return cfg.representation
    chosen = loop.curriculum.representation.get(module, {}).get("choice")
    if chosen:
        return chosen
    # Not chosen yet: stage calibration writes the solutions every candidate is rendered from.
    return pilot_families(cfg.candidates)[0] if cfg.calibration == "stage" else cfg.candidates[0]


def _pilot_path(loop: Loop, family: Representation) -> Path:
    """calibration/data.jsonl holds the Adapter's pilot solutions (as before "plain" existed), data.plain.jsonl
    the teacher's plain ones."""
    return loop.run / "calibration" / ("data.jsonl" if family == "steps" else f"data.{family}.jsonl")


def calibrate(loop: Loop) -> None:
    """The calibration pilot (DESIGN §4), once, from the initial student: verified teacher solutions for every
    target module (the Adapter's, and the teacher's plain ones when "plain" is a candidate), shown in each
    candidate representation, one short training each; the held-out accuracy per module decides. The pilot
    samples of the chosen representation are reused later as stage data; the others are not trained on
    (their teacher tokens still count, their samples do not: see `_mark_pilot_use`)."""
    cfg = loop.config.adapter
    targets = [m for s in loop.curriculum.stages for m in s.modules]
    todo = [m for m in targets if m not in loop.curriculum.representation]
    if (not cfg.enabled or cfg.representation != "auto" or cfg.calibration != "pilot" or not todo
            or len(cfg.candidates) < 2):
        return
    cdir = loop.run / "calibration"
    seed = derived_seed(loop.config.seed, "pilot")
    families = pilot_families(cfg.candidates)
    pilots: dict[Representation, list[Sample]] = {}
    for family in families:
        path = _pilot_path(loop, family)
        requests = [data_request(loop, m, cfg.pilot_samples_per_module, representation=family) for m in todo]
        pilots[family] = _load_samples(path) if path.exists() else loop.write_data(
            requests, path, seed, {"stage": 0, "purpose": "pilot"}, f"calibration: pilot data ({family})")
    scores: dict[str, dict[str, float]] = {m: {} for m in todo}
    for rep in cfg.candidates:
        samples = pilots[families[0] if rep == "bare" else pilot_family(rep)]
        student = loop.train_on([s.rendered(rep) for s in samples], cdir / rep, f"calibration: training ({rep})",
                                start_from=loop.student)
        acc = loop.evaluate(student, todo, cfg.pilot_eval_items, derived_seed(seed, "eval"), "gate",
                            f"calibration: evaluation ({rep})")
        for m in todo:
            scores[m][rep] = acc[m].value
    for m in todo:
        # Ties go to the earlier candidate (cheaper for the student to learn and to generate).
        best = max(cfg.candidates, key=lambda r: (scores[m][r], -cfg.candidates.index(r)))
        tied = [r for r in cfg.candidates if scores[m][r] == scores[m][best]]
        why = (f"highest held-out accuracy after a pilot of {cfg.pilot_samples_per_module} samples" if len(tied) == 1
               else f"tie between {', '.join(tied)}: the first candidate listed wins")
        loop.curriculum.representation[m] = {
            "choice": best, "pilot_accuracy": scores[m], "n": cfg.pilot_eval_items, "why": why,
        }
    _mark_pilot_use(loop, families)
    loop.run.event("calibrated", choices={m: loop.curriculum.representation[m] for m in todo})
    loop.save()


def stage_candidates(loop: Loop, stage: Stage) -> list[Representation]:
    """The representations stage calibration tries for a stage: those rendered from the one set of teacher
    solutions it writes (none once its modules are chosen, or when nothing is to be chosen)."""
    cfg = loop.config.adapter
    if not cfg.enabled or cfg.representation != "auto" or cfg.calibration != "stage":
        return []
    if all(m in loop.curriculum.representation for m in stage.modules):
        return []
    family = pilot_families(cfg.candidates)[0]
    reps = [r for r in cfg.candidates if r == "bare" or pilot_family(r) == family]
    return reps if len(reps) > 1 else []


def calibrate_stage(loop: Loop, stage: Stage, samples: Sequence[Sample], out: Path, start_from: str | None,
                    candidates: Sequence[Representation]) -> str:
    """Stage calibration: the stage's first training once per candidate representation (the same verified
    solutions rendered each way, from the same student), each scored on the round-0 gate items; the best
    mean P_S/P_T wins (the earlier candidate on a tie) for every module of the stage. The winner is copied to
    `out`, where the stage's student lives, the stage data is rewritten in its representation (remediation
    and later review train on it), and the gate that follows is served from the call cache."""
    org = loop.config.organizer
    sdir = loop.stage_dir(stage)
    mine = set(stage.modules)
    n = gate_item_count(org)
    seed = derived_seed(loop.config.seed, "gate", stage.index, 0)  # the items step_gate will use in round 0
    gates: list[GateResult] = []
    students: list[str] = []
    scores: dict[str, dict[str, float]] = {m: {} for m in stage.modules}
    for rep in candidates:
        rendered = [s.rendered(rep) if s.module in mine else s for s in samples]
        student = loop.train_on(rendered, sdir / f"calibration-{rep}",
                                f"stage {stage.index + 1}: calibration training ({rep}, {len(rendered)} samples)",
                                start_from=start_from)
        acc = loop.evaluate(student, stage.modules, n, seed, "gate",
                            f"stage {stage.index + 1}: calibration gate ({rep})")
        gates.append(mastery_gate(acc, loop.teacher_acc, org.tau_mastery, org.gate_mode, modules=stage.modules))
        students.append(student)
        for m in stage.modules:
            scores[m][rep] = acc[m].value
    found = best_gate(gates)
    best = 0 if found is None else found
    choice = candidates[best]
    tied = [r for r, g in zip(candidates, gates, strict=True) if g.ratios_mean == gates[best].ratios_mean]
    why = ("best gate (mean P_S/P_T over the stage) after the stage's training in each representation"
           if len(tied) == 1 else f"tie between {', '.join(tied)} at the gate: the first candidate listed wins")
    for m in stage.modules:
        loop.curriculum.representation[m] = {
            "choice": choice, "gate_accuracy": scores[m], "n": n, "stage": stage.index + 1, "why": why,
        }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(students[best], tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    write_jsonl(sdir / "data.jsonl", [s.rendered(choice) if s.module in mine else s for s in samples])
    loop.run.event("calibrated", stage=stage.index + 1, choices={m: loop.curriculum.representation[m]
                                                                for m in stage.modules})
    loop.reporter.info(f"stage {stage.index + 1}: calibration chose {choice} ("
                       + ", ".join(f"{r} {100 * sum(scores[m][r] for m in stage.modules) / len(stage.modules):.0f}%"
                                   for r in candidates) + ")")
    loop.save()
    return str(out)


def _pilot_source(loop: Loop, module: str) -> Representation:
    """The pilot set a module's chosen representation is rendered from."""
    families = pilot_families(loop.config.adapter.candidates)
    rep = _representation(loop, module)
    return families[0] if rep == "bare" else pilot_family(rep)


def _mark_pilot_use(loop: Loop, families: Sequence[Representation]) -> None:
    """Record, in each pilot set's accounting file, the modules whose samples will be trained on, so the
    spend (ioa.matching.loop_spend) counts trained samples, not the pilot sets calibration discarded."""
    for family in families:
        path = _pilot_path(loop, family).with_suffix(".accounting.json")
        if path.exists():
            acc = read_json(path)
            acc["used_modules"] = sorted(m for m in loop.curriculum.representation if _pilot_source(loop, m) == family)
            write_json(path, acc)


def _pilot_samples(loop: Loop, stage: Stage) -> list[Sample]:
    out: list[Sample] = []
    for module in stage.modules:
        path = _pilot_path(loop, _pilot_source(loop, module))
        out += [s for s in _load_samples(path) if s.module == module]
    return out


def step_synthesise(loop: Loop, stage: Stage, state: StageState) -> None:
    sdir = loop.stage_dir(stage)
    pilot = _pilot_samples(loop, stage)
    cfg = loop.config.adapter
    per_module = max(0, cfg.samples_per_module - cfg.pilot_samples_per_module) if pilot else cfg.samples_per_module
    seed = derived_seed(loop.config.seed, "stage", stage.index)
    samples = loop.write_data(stage_requests(loop, stage, per_module), sdir / "data.main.jsonl", seed,
                              {"stage": stage.index + 1, "purpose": "stage"}, f"stage {stage.index + 1}: synthesis")
    # Pilot solutions are verified teacher data too: reuse them in the chosen representation.
    samples += [s.rendered(_representation(loop, s.module)) for s in pilot]
    samples += _replay_samples(loop)
    samples += _load_samples(loop.run / f"stages/{stage.index:02d}/bridge.jsonl") if stage.index else []
    write_jsonl(sdir / "data.jsonl", samples)


def _replay_samples(loop: Loop) -> list[Sample]:
    """A share of each earlier-taught module's data: review, and replay for a fallen one (forgetting guard)."""
    out: list[Sample] = []
    if not loop.curriculum.pending_replay:
        return out
    earlier = [s for p in sorted((loop.run / "stages").glob("*/data.jsonl")) for s in _load_samples(p)
               if s.lineage.get("purpose") != "replay"]  # read once: review now names every taught module
    for module, n in loop.curriculum.pending_replay.items():
        # A seeded random share, not the first n: stage data is ordered by level, so a prefix would review
        # only the easiest levels (measured: a stage-2 review of levels 1-2 let 3-4-addend sums fall to 2/9).
        mine = [s for s in earlier if s.module == module]
        rng = random.Random(derived_seed(loop.config.seed, "review", module, len(loop.curriculum.snapshots)))
        for s in rng.sample(mine, min(n, len(mine))):
            out.append(Sample(**{**s.to_dict(), "lineage": {**s.lineage, "purpose": "replay"}}))
    return out


def training_data(loop: Loop, stage: Stage, state: StageState) -> tuple[list[Sample], Path]:
    sdir = loop.stage_dir(stage)
    if state.rounds == 0:
        return _load_samples(sdir / "data.jsonl"), sdir / "student"
    samples = _load_samples(sdir / f"remedial-{state.rounds}.jsonl")
    if loop.config.organizer.remediation_includes_stage_data:
        samples += _load_samples(sdir / "data.jsonl")
    return samples, sdir / f"student-r{state.rounds}"


def step_gate(loop: Loop, stage: Stage, state: StageState) -> GateResult:
    org = loop.config.organizer
    n = gate_item_count(org)
    seed = derived_seed(loop.config.seed, "gate", stage.index, state.rounds)
    acc, rows = loop.evaluate_rows(loop.student, stage.modules, n, seed, "gate",
                                   f"stage {stage.index + 1}: gate (round {state.rounds})")
    gate = mastery_gate(acc, loop.teacher_acc, org.tau_mastery, org.gate_mode, modules=stage.modules)
    frontier = {m: start_level(accuracy_by_level(rows, m), loop.domain.levels, org.tau_level, org.level_mode)
                for m in stage.modules}
    if org.remedial_levels == "frontier":  # the ladder re-enters where this gate found the student
        loop.curriculum.levels.update({m: frontier[m] for m in gate.failed_modules})
    loop.run.event("gate", stage=stage.index + 1, round=state.rounds, passed=gate.passed,
                   accuracy={m: [p.correct, p.n] for m, p in acc.items()}, gate=gate.to_dict(),
                   frontier=frontier)
    verdict = "passed" if gate.passed else f"failed on {', '.join(gate.failed_modules)}"
    loop.reporter.info(f"stage {stage.index + 1} gate (round {state.rounds}): {verdict}; "
                       + ", ".join(f"{m} {acc[m].correct}/{acc[m].n}" for m in stage.modules))
    return gate


def step_remediate(loop: Loop, stage: Stage, state: StageState) -> None:
    samples_given = {m: loop.config.adapter.samples_per_module for m in stage.modules}
    org = loop.config.organizer
    plan = remediation_plan(state, samples_given, org.remediation_fraction,
                            levels={m: loop.curriculum.levels.get(m, 1) for m in stage.modules},
                            step_down=org.remedial_levels == "easier")
    easier = plan.easier_by if loop.config.adapter.enabled else 0  # "simpler" is the Adapter's doing
    requests = [data_request(loop, m, plan.samples[m], plan.levels.get(m, 1), easier=easier) for m in plan.modules]
    seed = derived_seed(loop.config.seed, "remedial", stage.index, plan.round)
    loop.write_data(requests, loop.stage_dir(stage) / f"remedial-{plan.round}.jsonl", seed,
                    {"stage": stage.index + 1, "purpose": "remedial", "round": plan.round},
                    f"stage {stage.index + 1}: remedial data (round {plan.round})")


def step_bridge(loop: Loop, stage: Stage) -> None:
    following = [s for s in loop.curriculum.stages if s.index > stage.index]
    if not following:
        return
    plan = bridging_plan(stage, following[0], loop.config.adapter.samples_per_module * len(stage.modules),
                         loop.config.organizer.bridging_fraction, edges=_edges(loop),
                         levels={m: loop.curriculum.levels.get(m, 1) for m in stage.modules},
                         max_level=loop.domain.levels)
    requests = [data_request(loop, m, n, plan.levels.get(m, 1)) for m, n in plan.samples.items()]
    seed = derived_seed(loop.config.seed, "bridge", stage.index)
    # Written now, trained with the next stage's data (one training instead of two).
    loop.write_data(requests, loop.stage_dir(stage) / "bridge.jsonl", seed,
                    {"stage": stage.index + 1, "purpose": "bridge"}, f"stage {stage.index + 1}: bridging data")


def _edges(loop: Loop) -> list[Edge]:
    return [Edge(**e) for e in loop.curriculum.edges]


def run_stage(loop: Loop, stage: Stage) -> StageState:
    cur = loop.curriculum
    has_next = any(s.index > stage.index for s in cur.stages)
    state = cur.states.get(stage.index) or StageState.start(stage, loop.config.organizer, has_next)
    loop.reporter.info(f"stage {stage.index + 1}/{len(cur.stages)}: {', '.join(stage.modules)}")
    while (action := next_action(state)) not in TERMINAL:
        gate = None
        if action is Action.SYNTHESISE:
            cur.starts[stage.index] = cur.student
            step_synthesise(loop, stage, state)
        elif action is Action.TRAIN:
            samples, out = training_data(loop, stage, state)
            start_from = training_start(loop, stage, state)
            candidates = stage_candidates(loop, stage) if state.rounds == 0 and samples else []
            if candidates:
                loop.set_student(calibrate_stage(loop, stage, samples, out, start_from, candidates))
            else:
                loop.set_student(loop.train_on(samples, out, f"stage {stage.index + 1}: training "
                                               f"({len(samples)} samples)", start_from=start_from))
        elif action is Action.GATE:
            gate = step_gate(loop, stage, state)
        elif action is Action.REMEDIATE:
            if loop.budget_spent():  # a compute-matched run has nothing left to remediate with
                loop.run.event("budget_spent", stage=stage.index + 1, round=state.rounds)
                state = replace(state, max_rounds=state.rounds)
                cur.states[stage.index] = state
                loop.save()
                continue
            step_remediate(loop, stage, state)
        elif action is Action.BRIDGE:
            step_bridge(loop, stage)
        state = record(state, action, gate)
        cur.states[stage.index] = state
        loop.save()
    if state.outcome == "not_mastered" and loop.config.organizer.keep_best_round:
        keep_best_round(loop, stage, state)
    return state


def training_start(loop: Loop, stage: Stage, state: StageState) -> str | None:
    """Where a training of the stage starts: the current student, except that a remedial round (with
    remediation_from_stage_start) retrains the student the stage started with."""
    org = loop.config.organizer
    if state.rounds and org.remediation_from_stage_start and stage.index in loop.curriculum.starts:
        return str(loop.run / loop.curriculum.starts[stage.index])
    return None


def round_student(loop: Loop, stage: Stage, round_no: int) -> str:
    """The student gate `round_no` measured: that round's training output, or, where that round had no
    samples to train on, the student before it."""
    for r in range(round_no, -1, -1):
        path = loop.stage_dir(stage) / ("student" if r == 0 else f"student-r{r}")
        if (path / "config.json").exists():
            return _stored_path(path, loop.run)
    return loop.curriculum.starts.get(stage.index, loop.curriculum.student)


def keep_best_round(loop: Loop, stage: Stage, state: StageState) -> None:
    """An unmastered stage continues with the student of its best gate (idempotent: a resumed run picks
    the same one)."""
    best = best_gate(state.gates)
    if best is None or best == len(state.gates) - 1:
        return
    chosen = round_student(loop, stage, best)
    if chosen != loop.curriculum.student:
        loop.curriculum.student = chosen
        loop.run.event("kept_best_round", stage=stage.index + 1, round=best, student=chosen,
                       ratios=[g.ratios for g in state.gates])
        loop.reporter.info(f"stage {stage.index + 1}: not mastered; keeping the student of round {best}, "
                           "whose gate was best")
        loop.save()


def finish_stage(loop: Loop, stage: Stage, state: StageState) -> None:
    """Forgetting guard, snapshot, graph re-estimation and re-planning of what is left."""
    cur, cfg = loop.curriculum, loop.config
    action = next_action(state)
    if state.outcome == "mastered":
        cur.mastered = sorted({*cur.mastered, *stage.modules})
    loop.run.event("stage_done", stage=stage.index + 1, outcome=state.outcome)
    earlier = [m for m in cur.mastered if m not in stage.modules]
    cur.pending_replay = {}
    if earlier:
        n = gate_item_count(cfg.organizer)
        acc = loop.evaluate(loop.student, earlier, n, derived_seed(cfg.seed, "retention", stage.index), "gate",
                            f"stage {stage.index + 1}: forgetting guard")
        fallen = forgetting_check({m: acc[m] for m in earlier}, acc, loop.teacher_acc,
                                  cfg.organizer.tau_mastery, cfg.organizer.gate_mode)
        counts = {m: cfg.adapter.samples_per_module for m in fallen}
        cur.pending_replay = replay_plan(fallen, cfg.adapter.samples_per_module * len(stage.modules),
                                         cfg.organizer.replay_fraction, counts)
        loop.run.event("forgetting_guard", stage=stage.index + 1, fallen=fallen, replay=cur.pending_replay)
    taught = [m for s in cur.stages if s.index <= stage.index for m in s.modules]
    cur.pending_replay = review_plan(taught, cfg.adapter.samples_per_module, cfg.organizer.review_fraction,
                                     cur.pending_replay)
    if action is Action.STOP:
        cur.stopped = True
    remaining = [s for s in cur.stages if s.index > stage.index]
    if remaining and not cur.stopped:
        latest = loop.snapshot(f"after stage {stage.index + 1}")
        snaps = [_proportions(s) for s in cur.snapshots]
        measured = measured_edges(snaps, loop.teacher_acc, cfg.identifier)
        declared = [e for e in loop.diagnosis.edges if e.source == "declared"]
        edges = build_graph(list(loop.modules), declared=declared, proposed=[], measured=measured)
        cur.edges = [edge_dict(e) for e in edges]
        gaps = {m: gap(loop.teacher_acc[m].value, latest[m].value) for m in loop.modules}
        targets = [m for s in remaining for m in s.modules]
        done = [m for s in cur.stages if s.index <= stage.index for m in s.modules]
        cur.stages = [s for s in cur.stages if s.index <= stage.index] + replan(
            targets, done, edges, gaps, cfg.organizer.tau_zpd, first_index=stage.index + 1)
        loop.run.event("replanned", stages=[s.to_dict() for s in cur.stages], measured_edges=len(measured))
    loop.save()


# ------------------------------------------------------------------------------------- the whole run


@dataclass
class RunSummary:
    run_dir: Path
    comparisons: list[Comparison]
    targets: list[str]
    student_dir: Path
    seconds: float
    stages: list[dict[str, Any]]

    @property
    def targeted(self) -> Comparison:
        before = pooled({c.module: c.before for c in self.comparisons}, self.targets)
        after = pooled({c.module: c.after for c in self.comparisons}, self.targets)
        return Comparison("targeted (pooled)", before, after)


def run(config: RunConfig, reporter: Reporter | None = None, *, teacher: CachedModel | None = None,
        cache: CallCache | None = None) -> RunSummary:
    start = time.perf_counter()
    reporter = reporter or QuietReporter()
    loop = open_loop(config, reporter, teacher=teacher, cache=cache)
    teach(loop)
    summary = final_evaluation(loop)
    summary.seconds = time.perf_counter() - start
    loop.run.event("run_done", seconds=summary.seconds)
    return summary


def teach(loop: Loop) -> None:
    """Everything between diagnosis and the final evaluation: snapshot, calibration, the stages."""
    loop.save()
    if not loop.curriculum.stages:
        loop.reporter.info("no deficient module: nothing to teach")
    if not loop.curriculum.snapshots:
        loop.snapshot("initial")
        loop.save()
    calibrate(loop)
    while (stage := loop.curriculum.next_stage()) is not None:
        state = run_stage(loop, stage)
        finish_stage(loop, stage, state)


def final_evaluation(loop: Loop) -> RunSummary:
    """Held-out benchmark items (never probed, gated or trained on): base student vs final student."""
    cfg = loop.config
    modules = list(loop.modules)
    n, seed = cfg.evaluation.benchmark_items_per_module, derived_seed(cfg.seed, "benchmark")
    base = str(loop.run / "student_base") if (loop.run / "student_base").exists() else cfg.student.spec
    before = loop.evaluate(base, modules, n, seed, "benchmark", "final evaluation: student before")
    after = loop.evaluate(loop.student, modules, n, seed, "benchmark", "final evaluation: student after")
    comparisons = [Comparison(m, before[m], after[m]) for m in modules]
    final = publish_student(loop)
    summary = RunSummary(loop.run.path, comparisons, teaching_targets(cfg, loop.diagnosis), final, 0.0,
                         [s.to_dict() for s in loop.curriculum.states.values()])
    write_json(loop.run / "final.json", {
        "targets": summary.targets, "comparisons": [c.to_dict() for c in comparisons],
        "targeted": summary.targeted.to_dict(), "student": str(final),
        "teacher": {m: [p.correct, p.n] for m, p in loop.teacher_acc.items()},
    })
    return summary


def publish_student(loop: Loop) -> Path:
    """The final student, merged, in Hugging Face format, with the run's config and metrics beside it."""
    final = loop.run / "student"
    source = Path(loop.student)
    tmp = loop.run / "student.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.copyfile(loop.run / "config.yaml", tmp / "ioa_config.yaml")
    write_json(tmp / "ioa_curriculum.json", loop.curriculum.to_dict())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final

"""`ioa report RUN_DIR`: one self-contained HTML page (and a Markdown twin) describing a run.

Plain functions, in the order they run:
    load_run       read what the run directory holds (diagnosis is required, everything else optional)
    build_figures  PNG bytes per figure (ioa.figures)
    render_html / render_markdown
    write_report   all of the above, written atomically to RUN_DIR/report.html, report.md, figures/*.png

The HTML embeds its figures as base64 and carries no script, no external CSS and a Content-Security-Policy
that forbids loading anything, so it opens offline and a model-written string cannot reach the network.
Every string that comes from the run (model output above all) is escaped: html.escape for HTML, entity
plus backslash escaping for Markdown. A part of the run that is missing reads "not recorded".
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ioa.errors import IoaError
from ioa.rundir import atomic_write_text, read_json, read_jsonl
from ioa.stats import Proportion

if TYPE_CHECKING:
    from ioa.figures import Measurement

NOT_RECORDED = "not recorded"
FIGURE_NAMES = frozenset({"accuracy", "graph", "mastery", "data", "training", "time"})
EXAMPLES_PER_MODULE = 3
INVALID_REASONS = ("no_json", "invalid_json", "schema")  # the reply is not a usable solution at all
# Stage-level purposes of a data file, from its name (lineage says the same, per row).
PURPOSE_BY_NAME = {"data.main": "stage", "data": "stage", "bridge": "bridge", "pilot/data": "pilot"}


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class DataFile:
    """One synthesised data file of a stage with its accounting (`*.accounting.json`)."""

    stage: int  # 1-based, as in stages/NN
    name: str  # path inside the stage directory, e.g. data.main.jsonl, remedial-1.jsonl, pilot/data.jsonl
    purpose: str  # stage | pilot | remedial | bridge
    accounting: dict[str, Any] | None
    rows: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return f"stage {self.stage:02d} {self.name.removesuffix('.jsonl')}"


@dataclass
class Training:
    """One fine-tuning (stages/NN/student*/ioa_train.json, pilot trainings included)."""

    stage: int
    at: str  # path inside the run directory
    record: dict[str, Any]


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    scores: dict[str, Any]
    graph: dict[str, Any]
    probes: list[dict[str, Any]]
    curriculum: dict[str, Any] | None
    events: list[dict[str, Any]]
    final: dict[str, Any] | None
    data_files: list[DataFile]
    training_sets: dict[int, list[dict[str, Any]]]  # stage → rows of stages/NN/data.jsonl (what was trained)
    trainings: list[Training]
    warnings: list[str] = field(default_factory=list)

    # -- derived -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def finished(self) -> bool:
        return any(e.get("event") == "run_done" for e in self.events)

    @property
    def modules(self) -> list[str]:
        """Domain order (graph nodes), then any scored module the graph lacks."""
        nodes = [str(n) for n in self.graph.get("nodes", [])]
        return nodes + [s["module"] for s in self.score_rows if s["module"] not in nodes]

    @property
    def score_rows(self) -> list[dict[str, Any]]:
        return list(self.scores.get("scores", []))

    @property
    def targets(self) -> list[str]:
        if self.final and self.final.get("targets") is not None:
            return list(self.final["targets"])
        return [s["module"] for s in self.score_rows if s.get("target")]

    @property
    def teacher_acc(self) -> dict[str, Proportion]:
        return {s["module"]: _prop(s["teacher"]) for s in self.score_rows}

    @property
    def student_probe_acc(self) -> dict[str, Proportion]:
        return {s["module"]: _prop(s["student"]) for s in self.score_rows}

    @property
    def stages(self) -> list[dict[str, Any]]:
        return list(self.curriculum.get("stages", [])) if self.curriculum else []

    @property
    def states(self) -> dict[str, dict[str, Any]]:
        return dict(self.curriculum.get("states", {})) if self.curriculum else {}

    def cfg(self, section: str, key: str, default: Any = None) -> Any:
        value = (self.config.get(section) or {}).get(key)
        return default if value is None else value

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]


def _prop(value: Any) -> Proportion:
    """A Proportion from {correct, n} or [correct, n]."""
    if isinstance(value, Mapping):
        return Proportion(int(value["correct"]), int(value["n"]))
    correct, n = value
    return Proportion(int(correct), int(n))


def _read(path: Path, reader: Callable[[Path], Any], warnings: list[str], root: Path) -> Any:
    """An optional file: None when absent; when damaged, None and a warning (the report still renders)."""
    if not path.exists():
        return None
    try:
        return reader(path)
    except (OSError, ValueError) as exc:  # ValueError: JSON, YAML or UTF-8 damage
        warnings.append(f"{path.relative_to(root)} cannot be read ({type(exc).__name__}); left out")
        return None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def _events(path: Path) -> list[dict[str, Any]]:
    """events.jsonl; a torn line (a crash mid-append, or a run writing right now) is skipped."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                out.append(obj)
    return sorted(out, key=lambda e: float(e.get("time", 0.0)))


def _stage_number(path: Path) -> int | None:
    return int(path.name) if path.name.isdigit() else None


def _file_order(path: Path) -> tuple[int, int, str]:
    """Data files of a stage in the order the loop writes them: pilot, stage data, remedial rounds, bridge."""
    name = path.name
    rank = 0 if path.parent.name == "pilot" else 1 if name.startswith("data") else 3 if name.startswith("bridge") else 2
    digits = re.findall(r"\d+", name)
    return rank, int(digits[0]) if digits else 0, name  # remedial-10 after remedial-9


def load_run(path: Path) -> Run:
    """Everything the report shows. Raises IoaError for something that is not a run directory or has no
    diagnosis; any other missing or damaged part only becomes 'not recorded'."""
    path = Path(path)
    if not path.is_dir():
        raise IoaError(f"{path} is not a run directory", "give the directory `ioa run` wrote (runs/NAME)")
    scores_path = path / "diagnosis" / "scores.json"
    if not scores_path.exists():
        raise IoaError(f"{path} has no diagnosis ({scores_path.relative_to(path)} is missing)",
                       "run `ioa run CONFIG` (or `ioa diagnose`) into it first")
    try:
        scores = read_json(scores_path)
        if not isinstance(scores, dict) or not isinstance(scores.get("scores"), list):
            raise ValueError("no 'scores' list")
        for s in scores["scores"]:
            _prop(s["teacher"]), _prop(s["student"])  # validates the shape early
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IoaError(f"{scores_path} cannot be read ({exc})", "rerun `ioa run CONFIG` to rewrite it") from None

    warnings: list[str] = []
    config = _read(path / "config.yaml", _read_yaml, warnings, path)
    if not isinstance(config, dict):
        warnings.append("config.yaml is missing: thresholds shown are the defaults")
        config = {}
    graph = _read(path / "diagnosis" / "graph.json", read_json, warnings, path) or {}
    if not graph:
        graph = {"nodes": [s["module"] for s in scores["scores"]], "edges": []}
    probes = _read(path / "diagnosis" / "probes.jsonl", read_jsonl, warnings, path) or []
    curriculum = _read(path / "curriculum.json", read_json, warnings, path)
    events = _read(path / "events.jsonl", _events, warnings, path) or []
    final = _read(path / "final.json", read_json, warnings, path)

    data_files: list[DataFile] = []
    training_sets: dict[int, list[dict[str, Any]]] = {}
    trainings: list[Training] = []
    stages_dir = path / "stages"
    for sdir in sorted(p for p in stages_dir.glob("*") if p.is_dir()) if stages_dir.is_dir() else []:
        number = _stage_number(sdir)
        if number is None:
            continue
        composed = _read(sdir / "data.jsonl", read_jsonl, warnings, path)
        if composed is not None:
            training_sets[number] = composed
        for acc_path in sorted(sdir.rglob("*.accounting.json"), key=_file_order):
            rel = acc_path.relative_to(sdir).as_posix().removesuffix(".accounting.json")
            accounting = _read(acc_path, read_json, warnings, path)
            rows = _read(sdir / f"{rel}.jsonl", read_jsonl, warnings, path) or []
            purpose = "remedial" if Path(rel).name.startswith("remedial") else PURPOSE_BY_NAME.get(rel, rel)
            data_files.append(DataFile(number, f"{rel}.jsonl", purpose, accounting, rows))
        for result in sorted(sdir.rglob("ioa_train.json")):
            record = _read(result, read_json, warnings, path)
            if isinstance(record, dict):
                trainings.append(Training(number, result.parent.relative_to(path).as_posix(), record))
    return Run(path, config, scores, graph, probes, curriculum if isinstance(curriculum, dict) else None, events,
               final if isinstance(final, dict) else None, data_files, training_sets, trainings, warnings)


# ------------------------------------------------------------------------------------------ derived data


def mastery_timeline(run: Run) -> list[Measurement]:
    """The run's measurements of P_S/P_T in time order: snapshots, gates (from events) and the final
    held-out evaluation. Snapshot k ≥ 1 is the one taken just before the k-th `replanned` event."""
    from ioa.figures import Measurement  # matplotlib is imported only when a report is drawn

    teacher = run.teacher_acc
    snapshots = list(run.curriculum.get("snapshots", [])) if run.curriculum else []

    def ratios(acc: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        for m, v in acc.items():
            t = teacher.get(m)
            if t is not None and t.value > 0:
                out[m] = _prop(v).value / t.value
        return out

    timeline = []
    if snapshots:
        timeline.append(Measurement("initial snapshot", "snapshot", ratios(snapshots[0])))
    used, stage = 1, None
    for e in run.events:
        kind = e.get("event")
        if kind == "stage_done":
            stage = e.get("stage")
        elif kind == "gate" and isinstance(e.get("accuracy"), Mapping):
            gate = e.get("gate") or {}
            failed = set(gate.get("failed_modules", []))
            acc = ratios(e["accuracy"])
            timeline.append(Measurement(f"stage {e.get('stage')} gate (round {e.get('round', 0)})", "gate", acc,
                                        {m: m not in failed for m in acc}))
        elif kind == "replanned" and used < len(snapshots):
            label = f"snapshot after stage {stage}" if stage is not None else f"snapshot {used}"
            timeline.append(Measurement(label, "snapshot", ratios(snapshots[used])))
            used += 1
    for k in range(used, len(snapshots)):  # snapshots without a matching event (e.g. an event log lost lines)
        timeline.append(Measurement(f"snapshot {k}", "snapshot", ratios(snapshots[k])))
    if run.final:
        after = {c["module"]: c["after"] for c in run.final.get("comparisons", [])}
        timeline.append(Measurement("final (held-out)", "final", ratios(after)))
    return timeline


def stage_layers(run: Run) -> tuple[dict[str, int], dict[int, str]]:
    """Graph column per module: its stage number (1..); modules not taught get a column of their own,
    first when they are mostly prerequisites of taught ones, else last (so most arrows point right)."""
    layers: dict[str, int] = {}
    for s in run.stages:
        for m in s["modules"]:
            layers.setdefault(m, int(s["index"]) + 1)
    names = {int(s["index"]) + 1: f"stage {int(s['index']) + 1}" for s in run.stages}
    if not run.stages:  # diagnosed, not planned: targets in their own column
        layers |= {m: 1 for m in run.targets}
        names[1] = "targets (not yet planned)"
    rest = [m for m in run.modules if m not in layers]
    if rest:
        edges = graph_edges(run)
        feeding = sum(1 for e in edges if e["prereq"] in rest and e["module"] in layers)
        fed = sum(1 for e in edges if e["module"] in rest and e["prereq"] in layers)
        column = 0 if feeding >= fed else max(layers.values(), default=0) + 1
        layers |= {m: column for m in rest}
        names[column] = "not taught"
    return layers, names


def graph_edges(run: Run) -> list[dict[str, Any]]:
    """The latest graph (curriculum.json, re-estimated from the snapshots), then the diagnosis edges the
    re-estimation dropped, marked `current: False` (the figure draws them faint, the table says so)."""
    latest = [{**e, "current": True} for e in (run.curriculum.get("edges", []) if run.curriculum else [])]
    if not latest:
        return [{**e, "current": True} for e in run.graph.get("edges", [])]
    seen = {(e["prereq"], e["module"], e.get("source")) for e in latest}
    return latest + [{**e, "current": False} for e in run.graph.get("edges", [])
                     if (e["prereq"], e["module"], e.get("source")) not in seen]


def funnel(accounting: Mapping[str, Any]) -> dict[str, int]:
    """generated → valid → verified → deduplicated → clean (= kept), from one accounting record."""
    drops = Counter({str(k): int(v) for k, v in (accounting.get("drops") or {}).items()})
    generated = int(accounting.get("generated", 0))
    valid = generated - sum(drops[r] for r in INVALID_REASONS)
    verified = valid - drops["wrong_answer"]
    deduplicated = verified - drops["near_duplicate"]
    clean = deduplicated - drops["contaminated"]
    return {"generated": generated, "valid": valid, "verified": verified, "deduplicated": deduplicated,
            "clean": clean, "kept": int(accounting.get("kept", clean))}


def trained_files(run: Run) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """(stage, file, rows) of every set the run's student was really trained on: each stage's composed
    data.jsonl and each remedial file whose training finished (its student-rR directory exists)."""
    done = {t.at for t in run.trainings} | {str(e.get("at")) for e in run.events_of("trained")}
    out = [(stage, "data.jsonl", rows) for stage, rows in sorted(run.training_sets.items())]
    for f in run.data_files:
        if f.purpose == "remedial":
            r = f.name.removeprefix("remedial-").removesuffix(".jsonl")
            if f"stages/{f.stage:02d}/student-r{r}" in done:
                out.append((f.stage, f.name, f.rows))
    return out


def _learning_rates(t: Training) -> list[float]:
    log = t.record.get("metrics", {}).get("log", [])
    return [float(r["learning_rate"]) for r in log if isinstance(r.get("learning_rate"), int | float)]


def frozen_trainings(run: Run) -> list[str]:
    """Trainings whose learning rate was 0 at every logged step: they cannot have changed the weights."""
    return [t.at.removeprefix("stages/") for t in run.trainings if (r := _learning_rates(t)) and max(r) == 0.0]


def _phase(event: Mapping[str, Any]) -> str:
    kind = str(event.get("event"))
    where = str(event.get("file") or event.get("at") or "")
    if kind == "diagnosed":
        return "diagnosis (probing teacher and student)"
    if kind == "synthesised":
        if "/pilot/" in where:
            return "synthesis: pilot data"
        if "remedial" in where:
            return "synthesis: remedial data"
        if "bridge" in where:
            return "synthesis: bridging data"
        return "synthesis: stage data"
    if kind in ("trained", "empty_training_set"):
        return "training: calibration" if "calibration" in where or "/pilot/" in where else "training"
    return {
        "calibrated": "evaluation: pilot (calibration)",
        "gate": "evaluation: mastery gates",
        "forgetting_guard": "evaluation: forgetting guard",
        "replanned": "evaluation: snapshot + re-planning",
        "stage_done": "bookkeeping",
        "run_done": "final evaluation + publishing the student",
    }.get(kind, f"other ({kind})")


def phase_times(run: Run) -> tuple[list[tuple[str, float]], float | None, str]:
    """Wall time per phase, derived from event timestamps: each event's time minus the previous event's
    is charged to the phase that event ends. A `trained` event's own `seconds` (pure training) is
    charged to training and the rest of its interval to 'model loading/saving + untimed evaluation'.
    Returns (phases, total seconds or None, note)."""
    events = [e for e in run.events if isinstance(e.get("time"), int | float)]
    if not events:
        return [], None, "events.jsonl is missing or empty"
    done = run.events_of("run_done")
    start = None
    if done and isinstance(done[-1].get("seconds"), int | float):
        start = float(done[-1]["time"]) - float(done[-1]["seconds"])  # when the last invocation began
    first = float(events[0]["time"])
    if start is None:
        note = "no run_done event: the run's start is not recorded, so the time before the first event is not counted"
    elif start > first:
        note = ("the run was resumed: only the last invocation's start is recorded, so the time before the first "
                "event and the pause before the last invocation are not counted")
    else:
        note = ""
    phases: dict[str, float] = defaultdict(float)
    previous = start if start is not None and start <= first else None
    after_diagnosis = False
    for e in events:
        t = float(e["time"])
        if start is not None and previous is not None and previous < start <= t:
            previous = start  # the last invocation began here: the pause before it is no run time
        if previous is not None:
            interval = max(0.0, t - previous)
            name = _phase(e)
            if after_diagnosis:  # no event marks the initial snapshot: it sits inside the next interval
                name = f"initial snapshot + {name}"
            if e.get("event") == "trained" and isinstance(e.get("seconds"), int | float) and not e.get("reused"):
                train_s = min(interval, float(e["seconds"]))
                phases[name] += train_s
                phases["model loading/saving + untimed evaluation"] += interval - train_s
            else:
                phases[name] += interval
        previous = t
        after_diagnosis = e.get("event") == "diagnosed"
    total = sum(phases.values())
    return sorted(phases.items(), key=lambda kv: -kv[1]), total, note


def _teacher_price(run: Run) -> tuple[float, float] | None:
    """(prompt, completion) USD per million tokens for the teacher, or None without a price table."""
    prices = run.cfg("accounting", "prices", {}) or {}
    names = [run.scores.get("teacher"), run.cfg("teacher", "spec"), "*"]
    for name in names:
        if name in prices:
            p = prices[name] or {}
            return float(p.get("prompt_per_mtok", 0.0)), float(p.get("completion_per_mtok", 0.0))
    return None


def teacher_usage(run: Run) -> list[dict[str, Any]]:
    """Teacher tokens and cost per phase: probing (split into prompt/completion) and synthesis per purpose
    (only a total is recorded there, so a cost with different prompt/completion prices is a range)."""
    price = _teacher_price(run)
    rows = []
    probe_rows = [r for r in run.probes if r.get("role") == "teacher"]
    prompt = sum(int(r.get("prompt_tokens", 0)) for r in probe_rows)
    completion = sum(int(r.get("completion_tokens", 0)) for r in probe_rows)
    cached = sum(1 for r in probe_rows if r.get("cached"))
    rows.append({"phase": "diagnosis (probing)", "calls": len(probe_rows), "tokens": prompt + completion,
                 "cost": None if price is None else (prompt * price[0] + completion * price[1]) / 1e6,
                 "cost_high": None, "note": f"{cached} replies from the call cache" if cached else ""})
    by_purpose: dict[str, list[DataFile]] = defaultdict(list)
    for f in run.data_files:
        by_purpose[f.purpose].append(f)
    for purpose, files in sorted(by_purpose.items()):
        recorded = [f.accounting for f in files if f.accounting]
        tokens = sum(int(a.get("teacher_tokens", 0)) for a in recorded)
        calls = sum(int(a.get("generated", 0)) for a in recorded)
        low = high = None
        if price is not None:
            low, high = tokens * min(price) / 1e6, tokens * max(price) / 1e6
        rows.append({"phase": f"synthesis: {purpose}", "calls": calls, "tokens": tokens, "cost": low,
                     "cost_high": high if high != low else None, "note": ""})
    return rows


def pick_examples(run: Run, module: str, k: int = EXAMPLES_PER_MODULE) -> list[dict[str, Any]]:
    """Up to k training samples of a module, as the student saw them (the composed stage data first),
    preferring different purposes and difficulty levels so the three show the range of the data."""
    pool = [r for _, _, rows in trained_files(run) for r in rows if r.get("module") == module]
    pool += [r for f in run.data_files for r in f.rows if r.get("module") == module]
    picked: list[dict[str, Any]] = []
    seen_ids: set[tuple[Any, Any]] = set()
    for key in (lambda r: (r.get("lineage") or {}).get("purpose"), lambda r: r.get("level"), id):
        seen_keys = {key(r) for r in picked}
        for r in pool:
            ident = (r.get("item_id"), r.get("representation"))
            if len(picked) >= k:
                return picked
            if ident in seen_ids or key(r) in seen_keys:
                continue
            picked.append(r)
            seen_ids.add(ident)
            seen_keys.add(key(r))
    return picked


# --------------------------------------------------------------------------------------------- figures


def build_figures(run: Run) -> dict[str, tuple[bytes, str]]:
    """name → (PNG bytes, caption). A figure whose data is not recorded is left out."""
    from ioa import figures

    modules, targets = run.modules, run.targets
    out: dict[str, tuple[bytes, str]] = {}

    series: list[tuple[str, Mapping[str, Proportion]]] = [("P_T teacher (probes)", run.teacher_acc)]
    if run.final and run.final.get("comparisons"):
        comps = run.final["comparisons"]
        series.append(("P_S before (held-out)", {c["module"]: _prop(c["before"]) for c in comps}))
        series.append(("P_S after (held-out)", {c["module"]: _prop(c["after"]) for c in comps}))
        caption = ("Per module: teacher accuracy on the probes, and the student's held-out accuracy before and "
                   "after the run (benchmark split, never probed, gated or trained on); 95% Wilson intervals.")
    else:
        series.append(("P_S student (probes)", run.student_probe_acc))
        caption = ("Per module: teacher and student accuracy on the diagnosis probes; 95% Wilson intervals. "
                   "The 'after' accuracy is not recorded yet (no final.json).")
    out["accuracy"] = (figures.accuracy_bars(modules, series, targets), caption)

    layers, names = stage_layers(run)
    out["graph"] = (figures.prerequisite_graph(modules, graph_edges(run), layers, names, targets),
                    "Prerequisite graph: one column per curriculum stage (plus one for modules not taught), "
                    "targets in red; edge style by source, measured edges labelled with their Dep strength; "
                    "faint edges were dropped when the graph was re-estimated from the snapshots.")

    timeline = mastery_timeline(run)
    if timeline:
        tau = float(run.cfg("organizer", "tau_mastery", 0.9))
        out["mastery"] = (figures.mastery_trajectory(modules, timeline, tau, targets),
                          f"P_S/P_T per module at every measurement (point estimates; the gate itself reads "
                          f"{run.cfg('organizer', 'gate_mode', 'lcb')} mode); dashed line: τ_mastery = {tau:g}.")

    rows = [(f.label, int(f.accounting.get("kept", 0)), dict(f.accounting.get("drops") or {}))
            for f in run.data_files if f.accounting]
    if rows:
        out["data"] = (figures.data_funnel(rows), "Every teacher reply per data file: kept, or dropped and why.")

    curves = [(t.at.removeprefix("stages/"), [float(r["loss"]) for r in t.record.get("metrics", {}).get("log", [])
                                              if "loss" in r]) for t in run.trainings]
    curves = [c for c in curves if c[1]]
    if curves:
        out["training"] = (figures.training_loss(curves), "Training loss per logged step of every fine-tuning.")

    phases, _, _ = phase_times(run)
    if phases:
        out["time"] = (figures.phase_times(phases), "Wall time per phase, derived from event timestamps.")
    return out


# ------------------------------------------------------------------------------------------- rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")  # inline markup; '(' and '!' are inert once '[' is escaped
_MD_LINE_START = re.compile(r"^(\s*)([-+]|\d+\.)(?=\s)")  # would start a list item


def esc(value: Any) -> str:
    """HTML-escape anything (quotes included: values also land in attributes)."""
    return html.escape(str(value), quote=True)


def md_esc(value: Any) -> str:
    """Markdown-escape inline text: entities for <>& (no raw HTML survives), backslashes for markup,
    and no line breaks (a table cell must stay on its line)."""
    text = html.escape(str(value), quote=False).replace("\r", " ").replace("\n", " ⏎ ")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    marker = _MD_LINE_START.match(text)
    if marker:  # "- x" → "\- x", "1. x" → "1\. x"
        lead, mark = marker.groups()
        mark = "\\" + mark if mark in "-+" else mark[:-1] + "\\."
        text = lead + mark + text[marker.end():]
    return text


def md_code(text: str, lang: str = "text") -> str:
    """A fenced block that the text cannot close: the fence is longer than any backtick run in it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _fmt_pct(p: Proportion | None) -> str:
    if p is None:
        return NOT_RECORDED
    lo, hi = p.interval
    return f"{100 * p.value:.1f}% [{100 * lo:.0f}, {100 * hi:.0f}] ({p.correct}/{p.n})"


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _money(low: float | None, high: float | None = None) -> str:
    if low is None:
        return "– (no price)"
    if high is not None:
        return f"${low:.4f} – ${high:.4f}"
    return f"${low:.4f}"


class Doc:
    """Builds the HTML and the Markdown of the report side by side (same content, same order)."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []

    def section(self, sid: str, title: str) -> None:
        self.html.append(f'</section>\n<section id="{esc(sid)}">\n<h2>{esc(title)}</h2>')
        self.md.append(f"\n## {md_esc(title)}\n")

    def h3(self, title: str) -> None:
        self.html.append(f"<h3>{esc(title)}</h3>")
        self.md.append(f"\n### {md_esc(title)}\n")

    def p(self, text: str, cls: str = "") -> None:
        attr = f' class="{esc(cls)}"' if cls else ""
        self.html.append(f"<p{attr}>{esc(text)}</p>")
        self.md.append(("> " if cls == "warn" else "") + md_esc(text) + "\n")

    def kv(self, pairs: Iterable[tuple[str, Any]]) -> None:
        pairs = list(pairs)
        self.html.append("<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>")
        self.md.append("\n".join(f"- **{md_esc(k)}**: {md_esc(v)}" for k, v in pairs) + "\n")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> None:
        rows = [list(r) for r in rows]
        if not rows:
            self.p(NOT_RECORDED)
            return
        attr = f' class="{esc(cls)}"' if cls else ""
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        self.html.append(f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        lines = ["| " + " | ".join(md_esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(md_esc(c) for c in r) + " |" for r in rows]
        self.md.append("\n".join(lines) + "\n")

    def pre(self, text: str, summary: str | None = None) -> None:
        block = f"<pre>{esc(text)}</pre>"
        self.html.append(f"<details><summary>{esc(summary)}</summary>{block}</details>" if summary else block)
        self.md.append((f"<details><summary>{md_esc(summary)}</summary>\n\n" if summary else "")
                       + md_code(text) + ("\n\n</details>\n" if summary else "\n"))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.html.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
        self.md.append(f"![{md_esc(name)}](figures/{name}.png)\n\n*{md_esc(caption)}*\n")

    def raw_html(self, markup: str) -> None:
        """Markup built here from escaped parts only."""
        self.html.append(markup)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:16px 28px 48px;background:#fff;box-shadow:0 0 8px #0001}
h1{font-size:1.7em;margin:.4em 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.8em}
h3{margin:1.2em 0 .4em}
nav{font-size:.9em;background:#f2f4f7;padding:8px 12px;border-radius:6px}nav a{margin-right:12px}
table{border-collapse:collapse;font-size:.86em;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f4f7}tbody tr:nth-child(even){background:#fbfbfd}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
pre{background:#f6f8fa;border:1px solid #e4e4e4;padding:8px;font-size:.82em;white-space:pre-wrap;
word-break:break-word;overflow-wrap:anywhere;max-height:420px;overflow:auto}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:.92em}dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px}
.muted{color:#777}
.example{border:1px solid #e3e3e3;border-radius:6px;padding:6px 10px;margin:8px 0}
.example h4{margin:.2em 0 .4em;font-size:.95em}.example p.muted{font-size:.82em;margin:.2em 0}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:10px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
"""

SECTIONS = (
    ("summary", "Summary"),
    ("config", "Configuration and models"),
    ("accuracy", "Teacher vs student, before and after"),
    ("curriculum", "Prerequisite graph and curriculum"),
    ("mastery", "Mastery trajectory"),
    ("remediation", "Gates, remediation and replay"),
    ("data", "Data accounting"),
    ("cost", "Teacher tokens, cost and wall time"),
    ("examples", "Example synthetic items"),
)


def _summary(doc: Doc, run: Run) -> None:
    doc.section("summary", "Summary")
    if not run.finished:
        doc.p("This run has not finished (no run_done event in events.jsonl): the report shows what is "
              "recorded so far.", "warn")
    for w in run.warnings:
        doc.p(w, "warn")
    if frozen := frozen_trainings(run):
        doc.p(f"{len(frozen)} of {len(run.trainings)} trainings ran with learning rate 0 throughout (see Student "
              "fine-tuning): the student's weights did not change there.", "warn")
    pairs: list[tuple[str, Any]] = [
        ("run", run.name),
        ("domain", run.scores.get("domain", NOT_RECORDED)),
        ("teacher", run.scores.get("teacher", run.cfg("teacher", "spec", NOT_RECORDED))),
        ("student", run.scores.get("student", run.cfg("student", "spec", NOT_RECORDED))),
        ("modules", len(run.modules)),
        ("targets", ", ".join(run.targets) or "(none: no deficient module)"),
        ("stages", len(run.stages) if run.curriculum else NOT_RECORDED),
        ("mastered", ", ".join(run.curriculum.get("mastered", [])) or "(none)" if run.curriculum else NOT_RECORDED),
    ]
    targeted = (run.final or {}).get("targeted")
    if targeted:
        before, after = _prop(targeted["before"]), _prop(targeted["after"])
        lo, hi = targeted.get("delta_interval", [None, None])
        pairs.append(("targeted modules, held-out (pooled)",
                      f"{_fmt_pct(before)} → {_fmt_pct(after)}; Δ {100 * (after.value - before.value):+.1f} points"
                      + (f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None and hi is not None else "")))
    else:
        pairs.append(("targeted modules, held-out", NOT_RECORDED + " (no final.json)"))
    done = run.events_of("run_done")
    if done and isinstance(done[-1].get("seconds"), int | float):
        pairs.append(("wall time (last invocation)", f"{float(done[-1]['seconds']) / 60:.1f} min"))
    doc.kv(pairs)


def _config(doc: Doc, run: Run) -> None:
    doc.section("config", "Configuration and models")
    models = []
    for role in ("teacher", "student"):
        spec = run.cfg(role, "spec", NOT_RECORDED)
        models.append([role, spec, run.scores.get(role, NOT_RECORDED), run.cfg(role, "max_tokens", "–")])
    doc.table(["role", "spec (config)", "name (diagnosis)", "max tokens (probing)"], models)
    methods = sorted({f"{t.record.get('method')} on {t.record.get('device', '?')}, "
                      f"{int(t.record.get('params', 0)) / 1e6:.0f}M params" for t in run.trainings})
    if methods:
        doc.p("Student fine-tuning: " + "; ".join(methods) + ".")
    if run.final and run.final.get("student"):
        doc.p(f"Final student saved to: {run.final['student']}")
    thresholds = [
        ("seed", run.config.get("seed", NOT_RECORDED)),
        ("modules taught from", ", ".join(run.cfg("domain", "modules", [])) or "all of the domain's"),
        ("probes per module", run.cfg("identifier", "probes_per_module", NOT_RECORDED)),
        ("τ_gap / target fraction", f"{run.cfg('identifier', 'tau_gap', '?')} / "
                                    f"{run.cfg('identifier', 'target_fraction', '?')}"),
        ("τ_mastery / gate mode / gate items",
         f"{run.cfg('organizer', 'tau_mastery', '?')} / {run.cfg('organizer', 'gate_mode', '?')} / "
         f"{run.cfg('organizer', 'gate_items_per_module', '?')}"),
        ("τ_ZPD / R_max / on unmastered", f"{run.cfg('organizer', 'tau_zpd', '?')} / "
                                         f"{run.cfg('organizer', 'max_remediation_rounds', '?')} / "
                                         f"{run.cfg('organizer', 'on_unmastered', '?')}"),
        ("samples per module / representation", f"{run.cfg('adapter', 'samples_per_module', '?')} / "
                                                f"{run.cfg('adapter', 'representation', '?')}"),
        ("training", f"{run.cfg('training', 'method', '?')}, {run.cfg('training', 'epochs', '?')} epoch(s), "
                     f"batch {run.cfg('training', 'batch_size', '?')}"),
        ("held-out items per module", run.cfg("evaluation", "benchmark_items_per_module", NOT_RECORDED)),
    ]
    doc.kv(thresholds)
    if run.scores.get("probe_prompt"):
        doc.pre(str(run.scores["probe_prompt"]), "System prompt of the probes (student and teacher)")
    config_text = (run.path / "config.yaml").read_text(encoding="utf-8", errors="replace") \
        if (run.path / "config.yaml").exists() else NOT_RECORDED
    doc.pre(config_text, "config.yaml (resolved)")


def _accuracy(doc: Doc, run: Run, figs: Mapping[str, tuple[bytes, str]]) -> None:
    doc.section("accuracy", "Teacher vs student, before and after")
    if "accuracy" in figs:
        doc.figure("accuracy", *figs["accuracy"])
    comps = {c["module"]: c for c in (run.final or {}).get("comparisons", [])}
    rows = []
    for s in run.score_rows:
        m = s["module"]
        c = comps.get(m)
        delta = NOT_RECORDED
        if c:
            lo, hi = c.get("delta_interval", [0, 0])
            delta = f"{100 * float(c['delta']):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        flags = ", ".join(x for x in ("deficient" if s.get("deficient") else "",
                                      "teacher cannot teach" if s.get("teacher_cannot_teach") else "") if x)
        rows.append([m, _fmt_pct(_prop(s["teacher"])), _fmt_pct(_prop(s["student"])),
                     _fmt_pct(_prop(c["before"])) if c else NOT_RECORDED,
                     _fmt_pct(_prop(c["after"])) if c else NOT_RECORDED, delta, _num(s.get("gap")),
                     _num(s.get("severity")), flags, s.get("reason") or ("target" if s.get("target") else "")])
    doc.table(["module", "P_T probes", "P_S probes", "P_S before (held-out)", "P_S after (held-out)",
               "Δ after−before, points [95%]", "gap Δ", "severity", "flags", "target because"], rows)
    doc.p("Probe accuracies come from diagnosis/scores.json; before/after from final.json (held-out benchmark "
          "items, base student vs final student). Intervals: 95% Wilson; Δ: Newcombe.", "muted")


def _curriculum(doc: Doc, run: Run, figs: Mapping[str, tuple[bytes, str]]) -> None:
    doc.section("curriculum", "Prerequisite graph and curriculum")
    if "graph" in figs:
        doc.figure("graph", *figs["graph"])
    edges = graph_edges(run)
    doc.table(["prerequisite", "module", "source", "strength (Dep)", "in the latest graph"],
              [[e["prereq"], e["module"], e.get("source", "?"), _num(e.get("strength")),
                "yes" if e["current"] else "no: diagnosis only, dropped when re-estimated"] for e in edges])
    if not run.curriculum:
        doc.p("Curriculum: " + NOT_RECORDED + " (no curriculum.json).")
        return
    doc.h3("Stages")
    rows = []
    for s in run.stages:
        state = run.states.get(str(s["index"]), {})
        gates = "; ".join(
            f"round {i}: {'pass' if g.get('passed') else 'fail'} (min ratio {_num(g.get('min_ratio'))})"
            for i, g in enumerate(state.get("gates", [])))
        rows.append([int(s["index"]) + 1, ", ".join(s["modules"]), _num(s.get("difficulty")),
                     "ok" if s.get("zpd_ok", True) else s.get("note", "not ok"), state.get("outcome", "planned"),
                     state.get("rounds", 0), gates or "–"])
    doc.table(["stage", "modules", "difficulty (mean Δ)", "ZPD", "outcome", "remediation rounds", "gates"], rows)
    levels = run.curriculum.get("levels", {})
    reps = run.curriculum.get("representation", {})
    if levels or reps:
        doc.h3("Difficulty ladder and representation (calibration)")
        rows = []
        for m in sorted(set(levels) | set(reps)):
            rep = reps.get(m, {})
            rows.append([m, levels.get(m, "–"), rep.get("choice", run.cfg("adapter", "representation", "–")),
                         calibration_text(rep)])
        doc.table(["module", "ladder level", "representation", "calibration accuracy per candidate"], rows)


def calibration_text(choice: Mapping[str, Any]) -> str:
    """A calibration record of curriculum.json in words: accuracy per candidate, where measured, n."""
    measured = choice.get("gate_accuracy") or choice.get("pilot_accuracy") or {}
    if not measured:
        return "–"
    where = "stage gate" if "gate_accuracy" in choice else "pilot"
    return ", ".join(f"{k} {100 * float(v):.0f}%" for k, v in measured.items()) + f" ({where}, n={choice.get('n')})"


def _mastery(doc: Doc, run: Run, figs: Mapping[str, tuple[bytes, str]]) -> None:
    doc.section("mastery", "Mastery trajectory")
    if "mastery" not in figs:
        doc.p("Snapshots: " + NOT_RECORDED + " (the run has not taken one yet).")
        return
    doc.figure("mastery", *figs["mastery"])
    timeline = mastery_timeline(run)
    modules = [m for m in run.modules if any(m in t.ratios for t in timeline)]
    rows = [[t.label] + [_num(t.ratios.get(m)) if m in t.ratios else "" for m in modules] for t in timeline]
    doc.table(["measurement", *modules], rows)
    doc.p(f"Ratios are P_S/P_T with P_T from the diagnosis probes. Snapshots use the probe items "
          f"({run.cfg('identifier', 'probes_per_module', '?')} per module), gates fresh gate items, the final point "
          f"the held-out benchmark items.", "muted")


def _remediation(doc: Doc, run: Run) -> None:
    doc.section("remediation", "Gates, remediation and replay")
    t0 = float(run.events[0]["time"]) if run.events else 0.0
    rows = []
    for e in run.events:
        kind = e.get("event")
        when = f"{(float(e.get('time', t0)) - t0) / 60:.1f}"
        if kind == "gate":
            gate = e.get("gate") or {}
            acc = ", ".join(f"{m} {c}/{n}" for m, (c, n) in (e.get("accuracy") or {}).items())
            rows.append([when, f"stage {e.get('stage')}", "gate", f"round {e.get('round')}: "
                         f"{'passed' if e.get('passed') else 'failed on ' + ', '.join(gate.get('failed_modules', []))}"
                         f" (min ratio {_num(gate.get('min_ratio'))}, τ {gate.get('tau', '?')}, {gate.get('mode')}); "
                         + acc])
        elif kind == "synthesised" and "remedial" in str(e.get("file", "")):
            rows.append([when, "", "remedial data", f"{e.get('file')}: kept {e.get('kept')} of {e.get('generated')}"])
        elif kind == "synthesised" and "bridge" in str(e.get("file", "")):
            rows.append([when, "", "bridging data", f"{e.get('file')}: kept {e.get('kept')} of {e.get('generated')}"])
        elif kind == "forgetting_guard":
            fallen = e.get("fallen") or []
            replay = ", ".join(f"{m}: {n} samples" for m, n in (e.get("replay") or {}).items())
            rows.append([when, f"stage {e.get('stage')}", "forgetting guard",
                         ("fell below the gate: " + ", ".join(fallen) + f"; replay {replay}") if fallen
                         else "every earlier mastered module still passes"])
        elif kind == "calibrated":
            choices = ", ".join(f"{m}: {c.get('choice')}" for m, c in (e.get("choices") or {}).items())
            rows.append([when, f"stage {e.get('stage')}", "calibration", choices])
        elif kind == "stage_done":
            rows.append([when, f"stage {e.get('stage')}", "stage done", str(e.get("outcome"))])
        elif kind == "replanned":
            stages = "; ".join(f"{int(s['index']) + 1}: {', '.join(s['modules'])}" for s in e.get("stages", []))
            rows.append([when, "", "re-planned", f"{e.get('measured_edges', 0)} measured edge(s); stages {stages}"])
        elif kind == "empty_training_set":
            rows.append([when, "", "nothing to train", str(e.get("at"))])
    if rows:
        doc.table(["minute", "stage", "event", "what happened"], rows)
    else:
        doc.p("No gate, remediation or replay event " + ("yet." if not run.finished else "recorded."))
    replay = [r for _, _, rows_ in trained_files(run) for r in rows_ if (r.get("lineage") or {}).get("purpose") ==
              "replay"]
    if replay:
        counts = Counter(r.get("module") for r in replay)
        doc.p("Replay samples trained: " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items())) + ".")
    log = "\n".join(json.dumps(e, ensure_ascii=False) for e in run.events) or NOT_RECORDED
    doc.pre(log, f"events.jsonl ({len(run.events)} events)")


def _data(doc: Doc, run: Run, figs: Mapping[str, tuple[bytes, str]]) -> None:
    doc.section("data", "Data accounting")
    if not run.data_files:
        doc.p("Synthetic data: " + NOT_RECORDED + " (no stages/NN/*.accounting.json yet).")
        return
    if "data" in figs:
        doc.figure("data", *figs["data"])
    rows, total = [], Counter()
    reasons = sorted({r for f in run.data_files if f.accounting for r in (f.accounting.get("drops") or {})})
    for f in run.data_files:
        if not f.accounting:
            rows.append([f.label, f.purpose, NOT_RECORDED, "", "", "", "", "", ""])
            continue
        fun = funnel(f.accounting)
        total.update(fun)
        drops = f.accounting.get("drops") or {}
        rows.append([f.label, f.purpose, fun["generated"], fun["valid"], fun["verified"], fun["deduplicated"],
                     fun["kept"], ", ".join(f"{r} {drops[r]}" for r in reasons if drops.get(r)) or "–",
                     f.accounting.get("teacher_tokens", "–")])
    trained_rows = [r for _, _, rs in trained_files(run) for r in rs]
    rows.append(["all files", "", total["generated"], total["valid"], total["verified"], total["deduplicated"],
                 total["kept"], "", sum(int(f.accounting.get("teacher_tokens", 0)) for f in run.data_files
                                        if f.accounting)])
    doc.table(["file", "purpose", "generated", "valid", "verified", "deduplicated", "kept (clean)", "drops",
               "teacher tokens"], rows)
    doc.p("generated: teacher replies (retries included); valid: parsed into the solution schema; verified: the "
          "domain checker accepts the answer; deduplicated: near-duplicates removed; kept: also not overlapping "
          "probe or benchmark items (decontamination).", "muted")
    doc.h3("Per module")
    requested: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for f in run.data_files:
        for m, c in ((f.accounting or {}).get("modules") or {}).items():
            requested[m] += int(c.get("requested", 0))
            kept[m] += int(c.get("kept", 0))
    by_purpose: dict[str, Counter[str]] = defaultdict(Counter)
    for r in trained_rows:
        by_purpose[str(r.get("module"))][str((r.get("lineage") or {}).get("purpose", "?"))] += 1
    rows = []
    for m in [m for m in run.modules if m in requested or m in by_purpose]:
        trained = sum(by_purpose[m].values())
        rows.append([m, requested[m], kept[m], f"{100 * kept[m] / requested[m]:.0f}%" if requested[m] else "–",
                     trained, ", ".join(f"{p} {n}" for p, n in sorted(by_purpose[m].items())) or "–"])
    doc.table(["module", "requested", "kept", "kept/requested", "trained", "trained, by purpose"], rows)
    doc.p("Drop reasons are recorded per data file, not per module: " + NOT_RECORDED + " per module.", "muted")


def _cost(doc: Doc, run: Run, figs: Mapping[str, tuple[bytes, str]]) -> None:
    doc.section("cost", "Teacher tokens, cost and wall time")
    usage = teacher_usage(run)
    total_tokens = sum(u["tokens"] for u in usage)
    doc.table(["phase", "teacher calls", "teacher tokens", "cost (USD)", "note"],
              [[u["phase"], u["calls"], u["tokens"], _money(u["cost"], u["cost_high"]), u["note"]] for u in usage]
              + [["total", sum(u["calls"] for u in usage), total_tokens, "", ""]])
    if _teacher_price(run) is None:
        doc.p("Cost: the config's accounting.prices has no price for this teacher (a local model costs nothing "
              "but time).", "muted")
    elif any(u["cost_high"] is not None for u in usage):
        doc.p("Synthesis records only total teacher tokens (no prompt/completion split): its cost is a range.",
              "muted")
    doc.h3("Wall time per phase")
    phases, total, note = phase_times(run)
    if not phases:
        doc.p("Wall time per phase: " + NOT_RECORDED + (f" ({note})" if note else "") + ".")
    else:
        if "time" in figs:
            doc.figure("time", *figs["time"])
        doc.table(["phase", "minutes", "share"],
                  [[p, f"{s / 60:.2f}", f"{100 * s / total:.0f}%" if total else "–"] for p, s in phases]
                  + [["total", f"{(total or 0) / 60:.2f}", ""]])
        doc.p("Derived from event timestamps: each event's time minus the previous event's, charged to the phase "
              "that event ends (no event marks a snapshot or a model load, so the initial snapshot is inside the "
              "first phase after diagnosis). A training's own seconds are split from the evaluation before it."
              + (f" Note: {note}." if note else ""), "muted")
    doc.h3("Student fine-tuning")
    rows, frozen = [], frozen_trainings(run)
    for t in run.trainings:
        m = t.record.get("metrics", {})
        rates = _learning_rates(t)
        rows.append([t.at.removeprefix("stages/"), t.record.get("method", "?"), t.record.get("examples", "?"),
                     m.get("steps", "?"), f"{max(rates):.3g}" if rates else "–", _num(m.get("final_loss"), 4),
                     _num(m.get("seconds"), 1), _num(m.get("tokens_per_s"), 1),
                     _num((m.get("load_seconds") or 0) + (m.get("save_seconds") or 0), 1)])
    doc.table(["training", "method", "examples", "steps", "peak learning rate", "final loss", "train s", "tokens/s",
               "load+save s"], rows)
    if frozen:
        # A warm-up longer than the whole training (e.g. one optimizer step) leaves the learning rate at 0.
        doc.p(f"Warning: {len(frozen)} of {len(run.trainings)} trainings ran with learning rate 0 at every logged "
              f"step, so they cannot have changed the weights: {', '.join(frozen)}.", "warn")
    if "training" in figs:
        doc.figure("training", *figs["training"])


def _examples(doc: Doc, run: Run) -> None:
    doc.section("examples", "Example synthetic items")
    doc.p(f"Up to {EXAMPLES_PER_MODULE} training samples per module, as the student was trained on them, with their "
          "lineage. Problem and solution text is model-written and shown escaped.", "muted")
    any_module = False
    for m in run.modules:
        picked = pick_examples(run, m)
        if not picked:
            continue
        any_module = True
        doc.h3(m)
        for i, s in enumerate(picked, 1):
            prompt = next((str(msg.get("content", "")) for msg in reversed(s.get("prompt") or [])
                           if isinstance(msg, Mapping) and msg.get("role") == "user"), "")
            lineage = s.get("lineage") or {}
            lin = ", ".join(f"{k}={(', '.join(map(str, v)) or '–') if isinstance(v, list) else v}"
                            for k, v in lineage.items())
            head = f"{i}. {s.get('item_id', '?')} (level {s.get('level', '?')}, {s.get('representation', '?')})"
            doc.html.append(f'<div class="example"><h4>{esc(head)}</h4><div class="grid2">'
                            f"<div><b>problem</b><pre>{esc(prompt)}</pre></div>"
                            f"<div><b>training target</b><pre>{esc(s.get('completion', ''))}</pre></div></div>"
                            f'<p class="muted">lineage: {esc(lin)}</p></div>')
            doc.md.append(f"**{md_esc(head)}**\n\nproblem:\n\n{md_code(prompt)}\n\ntraining target:\n\n"
                          f"{md_code(str(s.get('completion', '')))}\n\nlineage: {md_esc(lin)}\n")
    if not any_module:
        doc.p("Training samples: " + NOT_RECORDED + ".")


def _document(run: Run, figs: Mapping[str, tuple[bytes, str]]) -> Doc:
    doc = Doc()
    _summary(doc, run)
    _config(doc, run)
    _accuracy(doc, run, figs)
    _curriculum(doc, run, figs)
    _mastery(doc, run, figs)
    _remediation(doc, run)
    _data(doc, run, figs)
    _cost(doc, run, figs)
    _examples(doc, run)
    return doc


def render(run: Run, figs: Mapping[str, tuple[bytes, str]]) -> tuple[str, str]:
    """(HTML, Markdown) of the report."""
    return page(f"ioa report: {run.name}", run.path, SECTIONS, _document(run, figs))


def page(title: str, path: Path, sections: Sequence[tuple[str, str]], doc: Doc) -> tuple[str, str]:
    """(HTML, Markdown) of a report: title, where it comes from, the section links and the document."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    nav = "".join(f'<a href="#{esc(sid)}">{esc(t)}</a>' for sid, t in sections)
    body = "\n".join(doc.html).removeprefix("</section>\n")  # the first section has nothing to close
    html_page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        # Nothing may be fetched or run: images are inline data, styles inline, no script at all.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">\n"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{esc(title)}</title>\n"
        f"<style>{CSS}</style></head>\n<body><main>\n<h1>{esc(title)}</h1>\n"
        f"<p class=\"muted\">{esc(str(path))} · rendered {esc(stamp)} by ioa report</p>\n<nav>{nav}</nav>\n"
        f"{body}\n</section>\n</main></body></html>\n"
    )
    md = f"# {md_esc(title)}\n\n_{md_esc(str(path))} · rendered {md_esc(stamp)} by ioa report_\n"
    md += "\n".join(doc.md)
    return html_page, md


# ---------------------------------------------------------------------------------------------- writing


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Like rundir.atomic_write_text, for the PNG files (a reader never sees half a figure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise IoaError(f"could not write {path}: {exc.strerror or exc}",
                       "free disk space or fix permissions, then rerun `ioa report`") from exc


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    figures: list[Path]
    seconds: float


def write_report(path: Path) -> ReportFiles:
    """Render the report of a run directory into it (report.html, report.md and figures/*.png); a bench
    directory (bench.yaml at its root) gets the bench report (ioa.bench_report)."""
    from ioa.bench_report import is_bench_dir, write_bench_report

    if is_bench_dir(Path(path)):
        return write_bench_report(Path(path))
    t0 = time.perf_counter()
    run = load_run(Path(path))
    figs = build_figures(run)
    html_page, md = render(run, figs)
    return write_files(run.path, html_page, md, figs, FIGURE_NAMES, t0)


def write_files(root: Path, html_page: str, md: str, figs: Mapping[str, tuple[bytes, str]],
                known: Iterable[str], t0: float) -> ReportFiles:
    """report.html, report.md and figures/NAME.png into `root`; a figure of `known` that this render does
    not have (left from an earlier one) is deleted."""
    paths = []
    for name, (png, _) in figs.items():
        path = root / "figures" / f"{name}.png"
        _atomic_write_bytes(path, png)
        paths.append(path)
    for stale in set(known) - figs.keys():
        with contextlib.suppress(FileNotFoundError):
            (root / "figures" / f"{stale}.png").unlink()
    atomic_write_text(root / "report.html", html_page)
    atomic_write_text(root / "report.md", md)
    return ReportFiles(root / "report.html", root / "report.md", paths, time.perf_counter() - t0)

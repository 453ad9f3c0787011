"""Knowledge Identifier, pure logic: gaps, the prerequisite graph, severity and targets (DESIGN §2).

Plain functions over plain data — no models, no I/O. Probing (running T and S on the probes) lives
elsewhere and hands its accuracies to `diagnose_scores`; snapshots of the student feed `measured_edges`.

    Eq. 2    Δ(k)     = (P_T(k) − P_S(k)) / P_T(k)                                    gap
    Eq. 3    Dep(i→j) = [P_S(j | r_i ≥ τ_high) − P_S(j | r_i < τ_low)] / [P_S(j | r_i ≥ τ_high) + ε]
    Eq. 4    sev(k)   = α·Δ(k) + (1−α)·mean over neighbours k' of Dep(k→k')           severity
    Eq. 5/6  targets  = top ⌈m·|deficient|⌉ by severity ∪ their not-yet-mastered prerequisites
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ioa.config import IdentifierConfig, OrganizerConfig
from ioa.graph import SOURCE_TRUST, Edge, ancestors, break_cycles
from ioa.stats import Proportion

# An accuracy is either a bare P in [0, 1] or an observed k/n (its point value is used).
Accuracy = float | Proportion
# One student snapshot: module -> P_S(module) after some training stage (DESIGN §1).
Snapshot = Mapping[str, Accuracy]

TOP_SEVERITY = "top severity"


# ---------------------------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class ModuleScore:
    """Everything the Identifier concluded about one module. `asdict`/JSON friendly via to_dict."""

    module: str
    teacher: Proportion
    student: Proportion
    gap: float  # Δ(k), Eq. 2, in [0, 1]
    deficient: bool  # Δ(k) > τ_gap
    teacher_cannot_teach: bool  # P_T(k) = 0: Δ is defined as 0 and nothing can be taught
    severity: float  # Eq. 4
    target: bool = False
    reason: str | None = None  # "top severity" or "prerequisite of a, b" when target

    @property
    def ratio(self) -> float | None:
        """r = P_S/P_T, the mastery ratio of Eq. 9; None where the teacher scores 0."""
        return None if self.teacher_cannot_teach else self.student.value / self.teacher.value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModuleScore:
        teacher, student = Proportion(**raw["teacher"]), Proportion(**raw["student"])
        return cls(**{**raw, "teacher": teacher, "student": student})


def _value(acc: Accuracy) -> float:
    return acc.value if isinstance(acc, Proportion) else float(acc)


# ------------------------------------------------------------------------------------------------ gap


def gap(p_teacher: float, p_student: float) -> float:
    """Eq. 2: the share of what the teacher knows that the student does not.

    Δ = 0 where P_T = 0 (the caller flags the module "teacher cannot teach"). Clamped at 0: a student
    better than the teacher has no gap, and a negative Δ would only lower that module's severity below
    modules that merely match the teacher, which means nothing.
    """
    for name, p in (("p_teacher", p_teacher), ("p_student", p_student)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} is not an accuracy in [0, 1]")
    if p_teacher == 0:
        return 0.0
    return max(0.0, (p_teacher - p_student) / p_teacher)


# ---------------------------------------------------------------------------------- measured edges


def dependency_strength(
    prereq: str,
    module: str,
    snapshots: Sequence[Snapshot],
    teacher: Mapping[str, Accuracy],
    cfg: IdentifierConfig,
) -> float | None:
    """Eq. 3, Dep(i→j) with i = prereq, j = module, over the run's student snapshots.

    The conditionals are means of P_S(j) over the snapshots in which r_i = P_S(i)/P_T(i) is high
    (≥ τ_high) resp. low (< τ_low). If j rises only once i is learned, Dep is near 1. None (undefined,
    so no edge) when either set of snapshots is empty or when P_T(i) = 0 (r_i does not exist).
    """
    p_t = _value(teacher[prereq])
    if p_t == 0:
        return None
    pairs = [(_value(s[prereq]) / p_t, _value(s[module])) for s in snapshots]  # (r_i, P_S(j)) per snapshot
    high = [p_j for r_i, p_j in pairs if r_i >= cfg.tau_high]
    low = [p_j for r_i, p_j in pairs if r_i < cfg.tau_low]
    if not high or not low:
        return None
    p_high, p_low = sum(high) / len(high), sum(low) / len(low)
    return (p_high - p_low) / (p_high + cfg.epsilon)


def measured_edges(snapshots: Sequence[Snapshot], teacher: Mapping[str, Accuracy], cfg: IdentifierConfig) -> list[Edge]:
    """Every pair i→j with Dep(i→j) > τ_dep, source "measured", strength Dep; sorted by (i, j).

    Empty below cfg.min_snapshots_for_measured_edges snapshots: a difference of two points is noise.
    Both i→j and j→i can pass (Eq. 3 sees correlation, not direction); build_graph breaks such cycles.
    """
    if len(snapshots) < cfg.min_snapshots_for_measured_edges:
        return []
    modules = sorted(teacher)
    for n, snapshot in enumerate(snapshots):
        if missing := set(modules) - set(snapshot):
            raise ValueError(f"snapshot {n} lacks modules {sorted(missing)}; a snapshot scores every module")
    edges = []
    for i in modules:
        for j in modules:
            if i == j:
                continue
            dep = dependency_strength(i, j, snapshots, teacher, cfg)
            if dep is not None and dep > cfg.tau_dep:
                edges.append(Edge(i, j, "measured", dep))
    return edges


# -------------------------------------------------------------------------------------------- graph


def build_graph(
    modules: Iterable[str], declared: Iterable[Edge], proposed: Iterable[Edge], measured: Iterable[Edge]
) -> list[Edge]:
    """G: the union of the three sources, one edge per (prereq, module) pair, made acyclic.

    A pair named by several sources keeps the most trusted source (declared > proposed > measured) and the
    measured Dep as its strength when one was measured. Cycles are then broken by dropping the weakest edge
    (graph.break_cycles). Result sorted by (prereq, module) so it is deterministic.
    """
    modules = sorted(set(modules))
    known = set(modules)
    merged: dict[tuple[str, str], Edge] = {}
    strength: dict[tuple[str, str], float] = {}
    for expected, edges in (("declared", declared), ("proposed", proposed), ("measured", measured)):
        for e in edges:
            if e.source != expected:
                raise ValueError(f"edge {e.prereq}→{e.module} has source {e.source!r}, passed as {expected}")
            if e.prereq not in known or e.module not in known:
                raise ValueError(f"edge {e.prereq}→{e.module} names a module outside {modules}")
            if e.prereq == e.module:
                continue  # a module is not its own prerequisite
            pair = (e.prereq, e.module)
            if e.source == "measured" and e.strength is not None:
                strength[pair] = e.strength
            if pair not in merged or SOURCE_TRUST[e.source] > SOURCE_TRUST[merged[pair].source]:
                merged[pair] = e
    edges = [replace(e, strength=strength.get(pair, e.strength)) for pair, e in sorted(merged.items())]
    return sorted(break_cycles(modules, edges), key=lambda e: (e.prereq, e.module))


# ----------------------------------------------------------------------------------------- severity


def severity(module: str, gaps: Mapping[str, float], edges: Iterable[Edge], alpha: float) -> float:
    """Eq. 4: α·Δ(k) + (1−α)·mean over neighbours k' (prerequisites and dependents) of Dep(k→k').

    Dep is the edge's measured strength, or 1 for a declared/proposed edge without one (DESIGN §2.5).
    A module without neighbours gets mean term 0 (so α·Δ), not its gap re-weighted to 1: a module that
    unlocks nothing and rests on nothing should not outrank a connected one with the same gap.
    """
    weight: dict[str, float] = {}
    for e in edges:
        if module not in (e.prereq, e.module) or e.prereq == e.module:
            continue
        other = e.module if e.prereq == module else e.prereq
        dep = e.strength if e.strength is not None else 1.0
        weight[other] = max(weight.get(other, dep), dep)  # one value per neighbour, even if listed twice
    mean_dep = sum(weight.values()) / len(weight) if weight else 0.0
    return alpha * gaps[module] + (1 - alpha) * mean_dep


# ------------------------------------------------------------------------------------------ targets


def mastered_by_ratio(tau_mastery: float = OrganizerConfig().tau_mastery) -> Callable[[ModuleScore], bool]:
    """The default "already mastered" test: not deficient and r = P_S/P_T ≥ τ_mastery (the gate's bar).

    The point ratio (not the Wilson lower bound) on purpose: this only decides whether a prerequisite is
    taught at all; the Organizer's gate still checks it with its own mode before the stage advances.
    """

    def mastered(score: ModuleScore) -> bool:
        return not score.deficient and score.ratio is not None and score.ratio >= tau_mastery

    return mastered


def select_targets(
    scores: Sequence[ModuleScore],
    edges: Iterable[Edge],
    fraction: float,
    mastered: Callable[[ModuleScore], bool] | None = None,
) -> list[ModuleScore]:
    """Eq. 5/6: mark targets and say why; returns `scores` in order with target/reason set.

    1. The top ⌈fraction·D⌉ of the D deficient modules by severity (at least 1 when D > 0), ties broken by
       module id so reruns agree.
    2. Every transitive prerequisite of those that is not yet mastered (default `mastered_by_ratio()`),
       because a curriculum cannot skip a prerequisite. A prerequisite the teacher cannot teach (P_T = 0) is
       left out — the Adapter would have nothing to write from — and stays flagged in its score.
    """
    is_mastered = mastered or mastered_by_ratio()
    edges = list(edges)
    by_module = {s.module: s for s in scores}
    deficient = sorted((s for s in scores if s.deficient), key=lambda s: (-s.severity, s.module))
    # round() first: 0.1·30 is 3.0000000000000004 in floats and must not become 4.
    count = max(1, math.ceil(round(fraction * len(deficient), 9))) if deficient else 0
    top = [s.module for s in deficient[:count]]

    reasons = dict.fromkeys(top, TOP_SEVERITY)
    needed_by: dict[str, list[str]] = {}
    for t in top:
        for p in sorted(ancestors(edges, t)):
            score = by_module.get(p)
            if p in reasons or score is None or score.teacher_cannot_teach or is_mastered(score):
                continue
            needed_by.setdefault(p, []).append(t)
    for p, targets in needed_by.items():
        reasons[p] = "prerequisite of " + ", ".join(sorted(targets))
    return [replace(s, target=s.module in reasons, reason=reasons.get(s.module)) for s in scores]


# ---------------------------------------------------------------------------------------- composed


def diagnose_scores(
    teacher_acc: Mapping[str, Proportion],
    student_acc: Mapping[str, Proportion],
    edges: Iterable[Edge],
    cfg: IdentifierConfig,
    mastered: Callable[[ModuleScore], bool] | None = None,
) -> list[ModuleScore]:
    """Probe accuracies + graph G → one ModuleScore per module (sorted by module id), targets marked."""
    if set(teacher_acc) != set(student_acc):
        differ = sorted(set(teacher_acc) ^ set(student_acc))
        raise ValueError(f"teacher and student scored different modules: {differ}")
    modules = sorted(teacher_acc)
    for m in modules:
        if teacher_acc[m].n == 0 or student_acc[m].n == 0:
            raise ValueError(f"module {m!r} has no probe results; it cannot be diagnosed")
    edges = list(edges)
    gaps = {m: gap(teacher_acc[m].value, student_acc[m].value) for m in modules}
    scores = [
        ModuleScore(
            module=m,
            teacher=teacher_acc[m],
            student=student_acc[m],
            gap=gaps[m],
            deficient=gaps[m] > cfg.tau_gap,
            teacher_cannot_teach=teacher_acc[m].value == 0,
            severity=severity(m, gaps, edges, cfg.alpha),
        )
        for m in modules
    ]
    return select_targets(scores, edges, cfg.target_fraction, mastered)


__all__ = [
    "TOP_SEVERITY",
    "Accuracy",
    "ModuleScore",
    "Snapshot",
    "build_graph",
    "dependency_strength",
    "diagnose_scores",
    "gap",
    "mastered_by_ratio",
    "measured_edges",
    "select_targets",
    "severity",
]

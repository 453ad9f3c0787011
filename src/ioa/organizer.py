"""Knowledge Organizer: when to teach (DESIGN §3). Pure logic on plain data, no models.

Reads top to bottom like §3:
  1. stages       plan_stages: topological layers of the target sub-graph (Eq. 7) ...
  2. ZPD          ... split so mean difficulty d = Δ rises at most τ_ZPD between stages (Eq. 8);
                  start_level / next_level: the difficulty ladder inside a module
  3. gate         mastery_gate: min_k P_S(k)/P_T(k) ≥ τ_mastery (Eq. 9), point or Wilson-lcb
  4. remediation  StageState + next_action: the stage life-cycle as a small state machine
  5. bridging     bridging_plan: a small batch one notch harder
  6. forgetting   forgetting_check, replay_plan, retention
  and replan: re-plan what is left once the graph is re-estimated.

Every result is a dataclass with to_dict/from_dict (JSON-ready, for curriculum.json).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any, Literal

from ioa.config import OrganizerConfig
from ioa.graph import Edge, break_cycles, topological_layers
from ioa.stats import Proportion

GateMode = Literal["point", "lcb"]
Outcome = Literal["in_progress", "mastered", "not_mastered", "ungated"]

# Float slack for threshold comparisons, so that 0.45 - 0.30 counts as a rise of exactly 0.15 and
# 0.72 / 0.80 as a ratio of exactly 0.9. Not a threshold of the method.
_EPS = 1e-9


# ---------------------------------------------------------------------------------------------------------
# 1-2. Stages (Eq. 7) and the zone of proximal development (Eq. 8)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Modules taught together. `difficulty` is their mean d(k) = Δ(k); `layer` the Eq. 7 layer they came
    from (several stages share a layer when the ZPD rule split it). `zpd_ok` is False when the rise over
    the previous stage exceeds τ_ZPD and no split could avoid it; `note` says why."""

    index: int
    modules: tuple[str, ...]
    difficulty: float
    layer: int
    zpd_ok: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "modules": list(self.modules)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Stage:
        return cls(**{**d, "modules": tuple(d["modules"])})


def difficulty(gap: float) -> float:
    """d(k) = Δ(k), floored at 0: a student that beats the teacher is no easier than 'mastered'."""
    return max(0.0, gap)


def _mean(modules: Sequence[str], d: Mapping[str, float]) -> float:
    return sum(d[m] for m in modules) / len(modules)


def _zpd_split(
    layer: list[str], d: Mapping[str, float], previous: float, tau_zpd: float
) -> list[tuple[list[str], bool]]:
    """Cut one layer into consecutive chunks, each rising at most τ_ZPD over the chunk before it.

    Modules of one layer never depend on each other, so any cut keeps prerequisite order. Each chunk is
    the longest easiest-first prefix within the ceiling (no k modules have a lower mean than the k easiest),
    so the hardest ones move later. If even the easiest module alone breaks the ceiling the jump is
    unavoidable: the ceiling becomes that module's difficulty (the smallest possible rise, and modules just
    as hard ride along) and the chunk is flagged.
    """
    rest = sorted(layer, key=lambda m: (d[m], m))
    chunks: list[tuple[list[str], bool]] = []
    while rest:
        ceiling = previous + tau_zpd
        ok = d[rest[0]] <= ceiling + _EPS
        if not ok:
            ceiling = d[rest[0]]
        size = 1
        while size < len(rest) and _mean(rest[: size + 1], d) <= ceiling + _EPS:
            size += 1
        chunk, rest = rest[:size], rest[size:]
        chunks.append((chunk, ok))
        previous = _mean(chunk, d)
    return chunks


def plan_stages(
    targets: Iterable[str],
    edges: Iterable[Edge],
    gaps: Mapping[str, float],
    tau_zpd: float,
    *,
    first_index: int = 0,
    previous_difficulty: float | None = None,
) -> list[Stage]:
    """Eq. 7 layers of the target sub-graph, then the ZPD rule of Eq. 8 (DESIGN §3.1-3.2).

    Only edges between targets order the stages (a prerequisite outside the targets is taken as mastered);
    their cycles are broken first (graph.break_cycles drops the weakest edge). Each layer is split by
    `_zpd_split` against the stage before it.

    The first stage has no stage before it. Comparing it with 0 ("mastered") would flag every first stage,
    since every target is deficient (Δ > τ_gap ≥ τ_ZPD by default); leaving it unconstrained would let it
    mix a Δ = 0.3 module with a Δ = 0.95 one. So, unless `previous_difficulty` is given, the first stage is
    anchored at its easiest module: it may sit at most τ_ZPD above the student's nearest frontier.
    """
    targets = list(dict.fromkeys(targets))
    missing = [t for t in targets if t not in gaps]
    if missing:
        raise ValueError(f"no gap Δ for target module(s) {missing}; the Identifier must measure every target")
    d = {t: difficulty(gaps[t]) for t in targets}
    inside = [e for e in edges if e.prereq in d and e.module in d]
    layers = topological_layers(targets, break_cycles(targets, inside))

    stages: list[Stage] = []
    previous = previous_difficulty
    for layer_no, layer in enumerate(layers):
        if previous is None:
            previous = min(d[m] for m in layer)
        chunks = _zpd_split(layer, d, previous, tau_zpd)
        for chunk, ok in chunks:
            mean = _mean(chunk, d)
            if not ok:
                note = f"mean difficulty rises {mean - previous:.3f} > tau_zpd {tau_zpd:g}; no split avoids it"
            elif len(chunks) > 1:
                note = f"split from layer {layer_no} by the ZPD rule"
            else:
                note = ""
            stages.append(Stage(first_index + len(stages), tuple(chunk), mean, layer_no, ok, note))
            previous = mean
    return stages


def replan(
    remaining_targets: Iterable[str],
    completed: Iterable[str],
    edges: Iterable[Edge],
    gaps: Mapping[str, float],
    tau_zpd: float,
    *,
    first_index: int = 0,
) -> list[Stage]:
    """Stages for what is left after the graph and gaps are re-estimated (DESIGN §5).

    Completed modules count as satisfied prerequisites: they leave the target set, so edges from them no
    longer hold anything back. `first_index` continues the run's stage numbering. The first remaining stage
    is anchored like a first stage: the completed stages' Δ has fallen since (they were learned), so
    comparing against it would flag every later stage.
    """
    done = set(completed)
    remaining = [t for t in remaining_targets if t not in done]
    return plan_stages(remaining, edges, gaps, tau_zpd, first_index=first_index)


def start_level(
    level_accuracy: Mapping[int, Proportion], max_level: int, tau_level: float, mode: GateMode = "point"
) -> int:
    """Where a module's data starts on the ladder 1..max_level: one above the highest level solved reliably.

    Reliably = accuracy (point, or Wilson lower bound for mode 'lcb') ≥ tau_level. Only the unbroken run
    from level 1 counts: the ladder never skips, so a level failed below a passed one is taught first. An
    unprobed level is not known to be solved. A module solved at every level starts at the top.
    """
    level = 1
    while level < max_level and level in level_accuracy:
        if _accuracy(level_accuracy[level], mode) < tau_level - _EPS:
            break
        level += 1
    return level


def next_level(current: int, max_level: int) -> int:
    """One level up, never skipping, and staying at the top once there."""
    if not 1 <= current <= max_level:
        raise ValueError(f"level {current} is outside the ladder 1..{max_level}")
    return min(current + 1, max_level)


# ---------------------------------------------------------------------------------------------------------
# 3. The mastery gate (Eq. 9)
# ---------------------------------------------------------------------------------------------------------


def _point(p: Proportion | float) -> float:
    return p.value if isinstance(p, Proportion) else float(p)


def _accuracy(p: Proportion, mode: GateMode) -> float:
    """The student's accuracy as the gate reads it: the estimate, or its 95% Wilson lower bound."""
    return p.lower if mode == "lcb" else p.value


def mastery_ratio(student: Proportion, teacher: Proportion | float, mode: GateMode) -> float | None:
    """P_S(k)/P_T(k), P_S read per `mode`, P_T as a point estimate; None when P_T = 0 (nothing to reach)."""
    p_t = _point(teacher)
    if p_t <= 0:
        return None
    return _accuracy(student, mode) / p_t


@dataclass(frozen=True)
class GateResult:
    """One gate decision. `ratios[k]` is None for a module the teacher cannot solve (`ungated`): such a
    module cannot block the stage, but a stage with no gateable module at all does not pass.
    `binding` is the module with the lowest ratio, the one that decides."""

    mode: GateMode
    tau: float
    ratios: dict[str, float | None]
    passed_modules: tuple[str, ...]
    failed_modules: tuple[str, ...]
    ungated: tuple[str, ...]
    binding: str | None

    @property
    def passed(self) -> bool:
        return not self.failed_modules and bool(self.passed_modules)

    @property
    def min_ratio(self) -> float | None:
        return None if self.binding is None else self.ratios[self.binding]

    @property
    def ratios_mean(self) -> float | None:
        """Mean P_S/P_T over the gated modules (None when none is gateable): how well the student did overall."""
        gated = [r for r in self.ratios.values() if r is not None]
        return sum(gated) / len(gated) if gated else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("passed_modules", "failed_modules", "ungated"):
            d[key] = list(d[key])
        return {**d, "passed": self.passed, "min_ratio": self.min_ratio}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        return cls(
            mode=d["mode"],
            tau=d["tau"],
            ratios=dict(d["ratios"]),
            passed_modules=tuple(d["passed_modules"]),
            failed_modules=tuple(d["failed_modules"]),
            ungated=tuple(d["ungated"]),
            binding=d["binding"],
        )


def mastery_gate(
    student: Mapping[str, Proportion],
    teacher: Mapping[str, Proportion | float],
    tau_mastery: float,
    mode: GateMode,
    modules: Iterable[str] | None = None,
) -> GateResult:
    """Eq. 9: advance when min over the stage's modules of P_S(k)/P_T(k) ≥ τ_mastery (default: all of
    `student`). Mode 'point' is the paper's; 'lcb' uses the Wilson lower bound of P_S (DESIGN §3.3)."""
    modules = list(student) if modules is None else list(modules)
    absent = [k for k in modules if k not in student or k not in teacher]
    if absent:
        raise ValueError(f"gate needs P_S and P_T for every module; missing for {absent}")
    ratios = {k: mastery_ratio(student[k], teacher[k], mode) for k in modules}
    gated = {k: r for k, r in ratios.items() if r is not None}
    return GateResult(
        mode=mode,
        tau=tau_mastery,
        ratios=ratios,
        passed_modules=tuple(k for k, r in gated.items() if r >= tau_mastery - _EPS),
        failed_modules=tuple(k for k, r in gated.items() if r < tau_mastery - _EPS),
        ungated=tuple(k for k, r in ratios.items() if r is None),
        binding=min(gated, key=lambda k: (gated[k], k)) if gated else None,
    )


def best_gate(gates: Sequence[GateResult]) -> int | None:
    """The round (index into `gates`) whose student did best: highest mean P_S/P_T over the gated modules,
    the earliest on a tie (less training for the same result); None when no gate had a gateable module."""
    scored = [(mean, -i) for i, g in enumerate(gates) if (mean := g.ratios_mean) is not None]
    return -max(scored)[1] if scored else None


def gate_items_needed(tau_mastery: float, mode: GateMode, max_items: int) -> int:
    """The smallest n for which a perfect n/n passes the gate against a perfect teacher.

    Point: 1. Lcb: the Wilson lower bound of n/n is n/(n+z²), so 20/20 gives 0.84 and 35/35 0.90; fewer
    gate items than this and the lcb gate cannot pass however good the student is.
    """
    for n in range(1, max_items + 1):
        if _accuracy(Proportion(n, n), mode) >= tau_mastery - _EPS:
            return n
    raise ValueError(
        f"the {mode} gate at tau_mastery {tau_mastery:g} needs more than {max_items} items per module; "
        "lower tau_mastery, use gate_mode point, or raise gate_items_max"
    )


def gate_item_count(config: OrganizerConfig) -> int:
    """Gate probes per module for a run: the configured count, but never too few to be passable."""
    needed = gate_items_needed(config.tau_mastery, config.gate_mode, config.gate_items_max)
    return max(config.gate_items_per_module, needed)


# ---------------------------------------------------------------------------------------------------------
# 4. The stage life-cycle and remediation
# ---------------------------------------------------------------------------------------------------------


class Action(str, Enum):
    """What the loop does next for a stage (DESIGN §5)."""

    SYNTHESISE = "synthesise"  # write the stage's adapted data (+ replay of fallen modules)
    TRAIN = "train"  # fine-tune S on what was written, then snapshot
    GATE = "gate"  # probe fresh gate items, call mastery_gate, record the result
    REMEDIATE = "remediate"  # write remedial data for the failing modules (remediation_plan)
    BRIDGE = "bridge"  # write and train the bridging batch (bridging_plan)
    DONE = "done"  # stage mastered
    GIVE_UP = "give_up"  # not mastered after R_max rounds; on_unmastered = continue
    STOP = "stop"  # not mastered after R_max rounds; on_unmastered = stop: end the run


TERMINAL = frozenset({Action.DONE, Action.GIVE_UP, Action.STOP})


@dataclass(frozen=True)
class StageState:
    """Everything the life-cycle needs to decide the next step, as facts; `next_action` derives the step.

    The settings it needs (R_max, on_unmastered, whether to bridge, whether to gate) are copied in at
    `start`, so the state in curriculum.json is self-describing and a resumed run decides exactly as before.
    An ungated stage (the "without Organizer" ablation) is synthesised, trained once, and done.
    """

    stage: Stage
    max_rounds: int
    on_unmastered: Literal["continue", "stop"]
    bridge: bool
    gated: bool = True
    synthesised: bool = False
    needs_training: bool = False
    needs_gate: bool = False
    rounds: int = 0  # remediation rounds begun
    gates: tuple[GateResult, ...] = ()
    bridged: bool = False

    @classmethod
    def start(cls, stage: Stage, config: OrganizerConfig, has_next_stage: bool) -> StageState:
        return cls(
            stage=stage,
            max_rounds=config.max_remediation_rounds if config.staged else 0,
            on_unmastered=config.on_unmastered,
            bridge=config.staged and has_next_stage and config.bridging_fraction > 0,
            gated=config.staged,
        )

    @property
    def last_gate(self) -> GateResult | None:
        return self.gates[-1] if self.gates else None

    @property
    def outcome(self) -> Outcome:
        action = next_action(self)
        if not self.gated:
            return "ungated" if action is Action.DONE else "in_progress"
        if action in (Action.GIVE_UP, Action.STOP):
            return "not_mastered"
        if self.last_gate is not None and self.last_gate.passed and not self.needs_gate:
            return "mastered"
        return "in_progress"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("stage", "gates")}
        return {
            **d,
            "stage": self.stage.to_dict(),
            "gates": [g.to_dict() for g in self.gates],
            "next_action": next_action(self).value,
            "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageState:
        facts = {k: v for k, v in d.items() if k not in ("next_action", "outcome")}
        return cls(
            **{
                **facts,
                "stage": Stage.from_dict(d["stage"]),
                "gates": tuple(GateResult.from_dict(g) for g in d["gates"]),
            }
        )


def next_action(state: StageState) -> Action:
    """DESIGN §5 for one stage: synthesise → train → gate; while the gate fails and rounds < R_max:
    remediate → train → gate; then bridge (if mastered and a stage follows) and finish. An ungated stage
    finishes after its one training."""
    if not state.synthesised:
        return Action.SYNTHESISE
    if state.needs_training:
        return Action.TRAIN
    if not state.gated:
        return Action.DONE
    if state.needs_gate:
        return Action.GATE
    gate = state.last_gate
    assert gate is not None  # a trained, gated stage always has a gate result
    if gate.passed:
        return Action.BRIDGE if state.bridge and not state.bridged else Action.DONE
    # Remedial data is for failing modules; if the failure is only "no gateable module" there is nothing
    # the teacher can remediate, so rounds would be spent for nothing.
    if state.rounds < state.max_rounds and gate.failed_modules:
        return Action.REMEDIATE
    return Action.STOP if state.on_unmastered == "stop" else Action.GIVE_UP


def record(state: StageState, action: Action, gate: GateResult | None = None) -> StageState:
    """The state after `action` was carried out. Only the action `next_action` asked for may be recorded
    (a loop that does steps out of order is a bug); GATE needs its result. Terminal actions change nothing."""
    expected = next_action(state)
    if action != expected:
        raise ValueError(f"stage {state.stage.index}: recorded {action.value}, but the next step is {expected.value}")
    if (gate is not None) != (action == Action.GATE):
        raise ValueError("a gate result is recorded with GATE and only with GATE")
    if action == Action.SYNTHESISE:
        return replace(state, synthesised=True, needs_training=True)
    if action == Action.TRAIN:
        return replace(state, needs_training=False, needs_gate=True)
    if action == Action.GATE:
        assert gate is not None
        return replace(state, needs_gate=False, gates=(*state.gates, gate))
    if action == Action.REMEDIATE:
        return replace(state, rounds=state.rounds + 1, needs_training=True)
    if action == Action.BRIDGE:
        return replace(state, bridged=True)
    return state


def _share(fraction: float, n: int) -> int:
    """round(fraction · n), halves up, and at least 1 when both are positive (a batch is never empty)."""
    if fraction <= 0 or n <= 0:
        return 0
    return max(1, math.floor(fraction * n + 0.5))


def _spread(n: int, modules: Sequence[str]) -> dict[str, int]:
    """n samples over modules as evenly as possible, the remainder to the first (easiest) ones."""
    base, extra = divmod(n, len(modules))
    counts = {m: base + (i < extra) for i, m in enumerate(modules)}
    return {m: c for m, c in counts.items() if c > 0}


@dataclass(frozen=True)
class RemediationPlan:
    """Remedial data for one round (DESIGN §3.4): failing modules only, smaller, and `easier_by` notches
    easier in the Adapter's settings. `levels` is the ladder level per module when the caller gave them."""

    stage_index: int
    round: int
    modules: tuple[str, ...]
    samples: dict[str, int]
    easier_by: int
    levels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "modules": list(self.modules)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RemediationPlan:
        return cls(**{**d, "modules": tuple(d["modules"])})


def remediation_plan(
    state: StageState,
    stage_samples: Mapping[str, int] | int,
    remediation_fraction: float,
    levels: Mapping[str, int] | None = None,
    *,
    step_down: bool = True,
) -> RemediationPlan:
    """What REMEDIATE writes. Round r is r notches easier than the stage data in the Adapter's settings:
    round 1 is DESIGN's "one notch easier", and each further round steps down again since the notch before
    evidently did not land. `levels` are the ladder entry levels; with `step_down` they drop by r too
    (floored at 1), without it they are used as given (the frontier the failed gate measured).
    `stage_samples`: what each module got in the stage (one int if all got the same)."""
    if next_action(state) != Action.REMEDIATE:
        raise ValueError(f"stage {state.stage.index} does not need remediation now")
    gate = state.last_gate
    assert gate is not None
    round_no = state.rounds + 1
    failing = gate.failed_modules

    def given(m: str) -> int:
        return stage_samples if isinstance(stage_samples, int) else stage_samples[m]

    return RemediationPlan(
        stage_index=state.stage.index,
        round=round_no,
        modules=failing,
        samples={m: _share(remediation_fraction, given(m)) for m in failing},
        easier_by=round_no,
        levels={m: max(1, levels[m] - (round_no if step_down else 0)) for m in failing} if levels else {},
    )


# ---------------------------------------------------------------------------------------------------------
# 5. Bridging
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BridgingPlan:
    """A small batch of the mastered stage's modules, `harder_by` notch(es) up, leading into the next stage."""

    stage_index: int
    next_stage_index: int
    samples: dict[str, int]
    harder_by: int = 1
    levels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BridgingPlan:
        return cls(**d)


def bridging_plan(
    stage: Stage,
    next_stage: Stage,
    stage_size: int,
    bridging_fraction: float,
    *,
    edges: Iterable[Edge] = (),
    levels: Mapping[str, int] | None = None,
    max_level: int | None = None,
) -> BridgingPlan:
    """DESIGN §3.5: bridging_fraction of the stage size, one notch harder, on the stage's modules that the
    next stage builds on (prerequisites of its modules, when `edges` say so; otherwise all of them).
    `levels` (current ladder level per module) become one level higher, capped at `max_level`."""
    following = set(next_stage.modules)
    feeding = {e.prereq for e in edges if e.module in following}
    modules = [m for m in stage.modules if m in feeding] or list(stage.modules)
    samples = _spread(_share(bridging_fraction, stage_size), modules)
    top = max_level if max_level is not None else math.inf
    return BridgingPlan(
        stage_index=stage.index,
        next_stage_index=next_stage.index,
        samples=samples,
        levels={m: int(min(levels[m] + 1, top)) for m in samples} if levels else {},
    )


# ---------------------------------------------------------------------------------------------------------
# 6. Forgetting guard (beyond the paper)
# ---------------------------------------------------------------------------------------------------------


def forgetting_check(
    previously_mastered: Mapping[str, Proportion],
    now: Mapping[str, Proportion],
    teacher: Mapping[str, Proportion | float],
    tau_mastery: float,
    mode: GateMode,
) -> list[str]:
    """Earlier mastered modules that now fail the gate (same rule as Eq. 9, module by module), sorted.
    A module the teacher cannot solve is never reported. Every earlier module must have been re-probed."""
    gate = mastery_gate(now, teacher, tau_mastery, mode, modules=previously_mastered)
    return sorted(gate.failed_modules)


def replay_plan(
    fallen: Iterable[str],
    stage_size: int,
    replay_fraction: float,
    earlier_data_counts: Mapping[str, int],
) -> dict[str, int]:
    """Replay samples per fallen module for the next training round (DESIGN §3.6): replay_fraction of the
    stage size each, drawn from that module's earlier data and so never more than it has. A fallen module
    with no earlier data gets 0 (listed, so the loop can see it has nothing to replay)."""
    want = _share(replay_fraction, stage_size)
    return {m: min(want, earlier_data_counts.get(m, 0)) for m in fallen}


def review_plan(
    taught: Iterable[str],
    samples_per_module: int,
    review_fraction: float,
    replay: Mapping[str, int],
) -> dict[str, int]:
    """Samples of earlier data per taught module for the next training (spaced review): review_fraction of
    what a module got in its stage; a fallen module keeps its larger replay share. 0 turns review off."""
    want = _share(review_fraction, samples_per_module)
    plan = {m: want for m in taught if want}
    for m, n in replay.items():
        plan[m] = max(n, plan.get(m, 0))
    return plan


def retention(before: Mapping[str, Proportion], after: Mapping[str, Proportion]) -> dict[str, float | None]:
    """Per module, accuracy after / accuracy before (1.0 = nothing forgotten); None where before was 0."""
    absent = [k for k in before if k not in after]
    if absent:
        raise ValueError(f"retention needs a re-probe of every module; missing for {absent}")
    return {k: (after[k].value / before[k].value if before[k].value > 0 else None) for k in before}

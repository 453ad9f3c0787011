"""Knowledge Identifier pure logic, every formula checked against arithmetic done by hand (DESIGN §2)."""

from __future__ import annotations

import json

import pytest

from ioa.config import IdentifierConfig
from ioa.graph import Edge, find_cycle
from ioa.identifier import (
    TOP_SEVERITY,
    ModuleScore,
    build_graph,
    dependency_strength,
    diagnose_scores,
    gap,
    mastered_by_ratio,
    measured_edges,
    select_targets,
    severity,
)
from ioa.stats import Proportion

CFG = IdentifierConfig()  # τ_gap 0.3, τ_high 0.9, τ_low 0.7, τ_dep 0.3, ε 1e-8, α 0.7, m 0.25, 3 snapshots


def test_defaults_are_the_design_numbers() -> None:
    # The hand computations below assume DESIGN's defaults; fail loudly if they move.
    assert (CFG.tau_gap, CFG.tau_high, CFG.tau_low, CFG.tau_dep) == (0.3, 0.9, 0.7, 0.3)
    assert (CFG.epsilon, CFG.alpha, CFG.target_fraction, CFG.min_snapshots_for_measured_edges) == (
        1e-8,
        0.7,
        0.25,
        3,
    )


# ------------------------------------------------------------------------------------------- Eq. 2 gap


def test_gap_is_relative_to_the_teacher() -> None:
    assert gap(0.8, 0.2) == pytest.approx(0.75, abs=1e-12)  # (0.8 − 0.2) / 0.8
    assert gap(0.5, 0.4) == pytest.approx(0.2, abs=1e-12)  # (0.5 − 0.4) / 0.5
    assert gap(1.0, 1.0) == 0.0
    assert gap(1.0, 0.0) == 1.0


def test_gap_is_zero_where_the_teacher_scores_zero() -> None:
    assert gap(0.0, 0.0) == 0.0
    assert gap(0.0, 0.3) == 0.0


def test_gap_of_a_student_better_than_the_teacher_is_zero() -> None:
    assert gap(0.5, 0.6) == 0.0  # would be (0.5 − 0.6) / 0.5 = −0.2; clamped


def test_gap_rejects_non_accuracies() -> None:
    with pytest.raises(ValueError, match="p_teacher"):
        gap(1.2, 0.5)
    with pytest.raises(ValueError, match="p_student"):
        gap(0.5, -0.1)


# ------------------------------------------------------------------------------------------- Eq. 3 Dep

TEACHER = {"a": 0.8, "b": 0.5}
# b tracks a: b only rises once a is learned.
#            P_S(a)  r_a = P_S(a)/0.8    P_S(b)  r_b = P_S(b)/0.5
TRACKING = [
    {"a": 0.40, "b": 0.10},  # r_a 0.5    (low)     r_b 0.2 (low)
    {"a": 0.50, "b": 0.10},  # r_a 0.625  (low)     r_b 0.2 (low)
    {"a": 0.78, "b": 0.40},  # r_a 0.975  (high)    r_b 0.8 (neither)
    {"a": 0.80, "b": 0.50},  # r_a 1.0    (high)    r_b 1.0 (high)
]
# Dep(a→b): high {2,3} → mean b 0.45; low {0,1} → 0.10;  (0.45 − 0.10) / (0.45 + 1e-8) ≈ 0.7778
DEP_AB = 0.35 / (0.45 + 1e-8)
# Dep(b→a): high {3} → a 0.80; low {0,1} → mean a 0.45;  (0.80 − 0.45) / (0.80 + 1e-8) ≈ 0.4375
DEP_BA = 0.35 / (0.80 + 1e-8)

# b moves independently of a.
UNRELATED = [
    {"a": 0.40, "b": 0.30},  # r_a low    r_b 0.6 (low)
    {"a": 0.50, "b": 0.50},  # r_a low    r_b 1.0 (high)
    {"a": 0.78, "b": 0.50},  # r_a high   r_b 1.0 (high)
    {"a": 0.80, "b": 0.30},  # r_a high   r_b 0.6 (low)
]


def test_dep_when_the_dependent_tracks_the_prerequisite() -> None:
    assert dependency_strength("a", "b", TRACKING, TEACHER, CFG) == pytest.approx(DEP_AB, rel=1e-12)
    assert dependency_strength("b", "a", TRACKING, TEACHER, CFG) == pytest.approx(DEP_BA, rel=1e-12)
    dep_ab, dep_ba = (dependency_strength(i, j, TRACKING, TEACHER, CFG) for i, j in ("ab", "ba"))
    assert (dep_ab, dep_ba) == pytest.approx((7 / 9, 0.4375), abs=1e-7)  # ε shifts them by < 1e-7


def test_measured_edges_found_when_tracking() -> None:
    # Both pass τ_dep = 0.3: Eq. 3 sees correlation, not direction (build_graph settles that).
    edges = measured_edges(TRACKING, TEACHER, CFG)
    assert [(e.prereq, e.module, e.source) for e in edges] == [("a", "b", "measured"), ("b", "a", "measured")]
    assert edges[0].strength == pytest.approx(DEP_AB, rel=1e-12)
    assert edges[1].strength == pytest.approx(DEP_BA, rel=1e-12)


def test_no_edge_when_the_dependent_does_not_track() -> None:
    # Dep(a→b): high {2,3} mean b (0.5 + 0.3)/2 = 0.4; low {0,1} (0.3 + 0.5)/2 = 0.4 → 0
    assert dependency_strength("a", "b", UNRELATED, TEACHER, CFG) == 0.0
    # Dep(b→a): high {1,2} mean a (0.5 + 0.78)/2 = 0.64; low {0,3} (0.4 + 0.8)/2 = 0.6 → 0.04/0.64 = 0.0625
    assert dependency_strength("b", "a", UNRELATED, TEACHER, CFG) == pytest.approx(0.0625, abs=1e-7)
    assert measured_edges(UNRELATED, TEACHER, CFG) == []


def test_dep_undefined_when_a_condition_set_is_empty() -> None:
    always_high = [{"a": 0.8, "b": 0.1}, {"a": 0.76, "b": 0.2}, {"a": 0.8, "b": 0.5}]  # r_a ≥ 0.95
    assert dependency_strength("a", "b", always_high, TEACHER, CFG) is None
    assert dependency_strength("a", "b", always_high[:0], TEACHER, CFG) is None


def test_dep_undefined_where_the_teacher_scores_zero() -> None:
    assert dependency_strength("a", "b", TRACKING, {"a": 0.0, "b": 0.5}, CFG) is None


def test_dep_takes_proportions_by_their_point_value() -> None:
    # Same history as TRACKING, written as k/100 counts.
    as_counts = [{m: Proportion(round(p * 100), 100) for m, p in s.items()} for s in TRACKING]
    teacher = {m: Proportion(round(p * 100), 100) for m, p in TEACHER.items()}
    assert dependency_strength("a", "b", as_counts, teacher, CFG) == pytest.approx(DEP_AB, rel=1e-12)


def test_too_few_snapshots_give_no_measured_edges() -> None:
    few = CFG.min_snapshots_for_measured_edges - 1
    assert measured_edges([TRACKING[0], TRACKING[3]][:few], TEACHER, CFG) == []
    # Exactly the minimum (3): snapshots 0, 1, 3. Dep(a→b): high {3} 0.5, low {0,1} 0.1 → 0.4/0.5 = 0.8
    edges = measured_edges([TRACKING[0], TRACKING[1], TRACKING[3]], TEACHER, CFG)
    assert edges[0] == Edge("a", "b", "measured", pytest.approx(0.4 / (0.5 + 1e-8), rel=1e-12))
    # The threshold comes from config, not a literal.
    stricter = IdentifierConfig(min_snapshots_for_measured_edges=5)
    assert measured_edges(TRACKING, TEACHER, stricter) == []


def test_tau_dep_is_a_strict_threshold_from_config() -> None:
    # Dep(b→a) ≈ 0.4375: kept at τ_dep 0.43, dropped at 0.44.
    kept = measured_edges(TRACKING, TEACHER, IdentifierConfig(tau_dep=0.43))
    dropped = measured_edges(TRACKING, TEACHER, IdentifierConfig(tau_dep=0.44))
    assert [(e.prereq, e.module) for e in kept] == [("a", "b"), ("b", "a")]
    assert [(e.prereq, e.module) for e in dropped] == [("a", "b")]


def test_snapshot_missing_a_module_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"snapshot 1 lacks modules \['b'\]"):
        measured_edges([TRACKING[0], {"a": 0.5}, TRACKING[3]], TEACHER, CFG)


# ----------------------------------------------------------------------------------------------- graph


def test_build_graph_breaks_the_measured_two_cycle_by_strength() -> None:
    # a→b (0.78) and b→a (0.44) form a cycle; the weaker b→a goes.
    graph = build_graph(["a", "b"], [], [], measured_edges(TRACKING, TEACHER, CFG))
    assert graph == [Edge("a", "b", "measured", pytest.approx(DEP_AB, rel=1e-12))]


def test_build_graph_declared_beats_measured_in_a_cycle() -> None:
    # The domain says b before a; the snapshots' stronger a→b (0.78) still loses the cycle.
    declared = [Edge("b", "a", "declared")]
    graph = build_graph(["a", "b"], declared, [], [Edge("a", "b", "measured", DEP_AB)])
    assert graph == declared


def test_build_graph_merges_a_pair_keeping_trust_and_measured_strength() -> None:
    graph = build_graph(
        ["a", "b", "c"],
        declared=[Edge("a", "b", "declared")],
        proposed=[Edge("a", "b", "proposed"), Edge("b", "c", "proposed")],
        measured=[Edge("a", "b", "measured", 0.6), Edge("a", "c", "measured", 0.35)],
    )
    assert graph == [
        Edge("a", "b", "declared", 0.6),  # three sources, most trusted wins, Dep attached
        Edge("a", "c", "measured", 0.35),
        Edge("b", "c", "proposed"),  # never measured: no strength
    ]


def test_build_graph_result_is_a_sorted_dag() -> None:
    declared = [Edge("c", "a", "declared"), Edge("a", "b", "declared")]
    measured = [Edge("b", "c", "measured", 0.9), Edge("b", "b", "measured", 0.9)]  # cycle + self-loop
    graph = build_graph(["c", "b", "a"], declared, [], measured)
    assert graph == [Edge("a", "b", "declared"), Edge("c", "a", "declared")]
    assert find_cycle(["a", "b", "c"], graph) is None


def test_build_graph_rejects_bad_edges() -> None:
    with pytest.raises(ValueError, match="outside"):
        build_graph(["a"], [Edge("a", "z", "declared")], [], [])
    with pytest.raises(ValueError, match="passed as proposed"):
        build_graph(["a", "b"], [], [Edge("a", "b", "declared")], [])


# -------------------------------------------------------------------------------------- Eq. 4 severity


def test_severity_with_mixed_edge_sources() -> None:
    edges = [
        Edge("p1", "k", "declared"),  # no strength → Dep 1
        Edge("k", "d1", "measured", 0.4),  # a dependent counts too
        Edge("p2", "k", "proposed", 0.6),  # measured strength attached → 0.6
        Edge("x", "y", "declared"),  # not a neighbour
    ]
    # mean Dep = (1 + 0.4 + 0.6) / 3 = 2/3;  0.7·0.5 + 0.3·(2/3) = 0.35 + 0.2 = 0.55
    assert severity("k", {"k": 0.5}, edges, CFG.alpha) == pytest.approx(0.55, abs=1e-12)


def test_severity_of_an_isolated_module_is_its_weighted_gap() -> None:
    # No neighbours → mean term 0: 0.7·0.5 = 0.35
    assert severity("k", {"k": 0.5}, [Edge("x", "y", "declared")], CFG.alpha) == pytest.approx(0.35, abs=1e-12)


def test_severity_counts_a_neighbour_once() -> None:
    # The same pair listed twice (unmerged sources) is one neighbour with its strongest Dep:
    # mean {p: max(0.4, 1)} = 1;  0.7·0.2 + 0.3·1 = 0.44
    edges = [Edge("p", "k", "measured", 0.4), Edge("p", "k", "declared")]
    assert severity("k", {"k": 0.2}, edges, CFG.alpha) == pytest.approx(0.44, abs=1e-12)


# ----------------------------------------------------------------------------------- Eq. 5/6 targets


def P(correct: int) -> Proportion:
    return Proportion(correct, 10)


# facts → mul → word, copy → mul; extra is deficient but isolated.
GRAPH = [
    Edge("copy", "mul", "declared"),
    Edge("facts", "mul", "declared"),
    Edge("mul", "word", "proposed"),
]
TEACHER_ACC = {"word": P(8), "mul": P(10), "facts": P(10), "copy": P(10), "extra": P(10)}
STUDENT_ACC = {"word": P(2), "mul": P(6), "facts": P(8), "copy": P(10), "extra": P(5)}
# module  Δ                         deficient (> 0.3)  neighbours (Dep)     severity = 0.7·Δ + 0.3·mean
# word    (0.8 − 0.2)/0.8 = 0.75    yes                mul (1)              0.525 + 0.3 = 0.825
# mul     (1 − 0.6)/1     = 0.4     yes                copy, facts, word    0.28  + 0.3 = 0.58
# facts   (1 − 0.8)/1     = 0.2     no (ratio 0.8)     mul (1)              0.14  + 0.3 = 0.44
# copy    0                         no (ratio 1.0)     mul (1)              0     + 0.3 = 0.3
# extra   (1 − 0.5)/1     = 0.5     yes                none → 0             0.35
# Deficient: word, mul, extra → ⌈0.25·3⌉ = 1 target by severity: word.
# Its ancestors mul, facts, copy: mul (deficient) and facts (0.8 < 0.9) are unmastered; copy is mastered.
EXPECTED = {
    #        gap    deficient severity target reason
    "copy": (0.0, False, 0.3, False, None),
    "extra": (0.5, True, 0.35, False, None),
    "facts": (0.2, False, 0.44, True, "prerequisite of word"),
    "mul": (0.4, True, 0.58, True, "prerequisite of word"),
    "word": (0.75, True, 0.825, True, TOP_SEVERITY),
}


def test_diagnose_scores_by_hand() -> None:
    scores = diagnose_scores(TEACHER_ACC, STUDENT_ACC, GRAPH, CFG)
    assert [s.module for s in scores] == sorted(EXPECTED)
    for s in scores:
        g, deficient, sev, target, reason = EXPECTED[s.module]
        assert s.gap == pytest.approx(g, abs=1e-12), s.module
        assert s.severity == pytest.approx(sev, abs=1e-12), s.module
        assert (s.deficient, s.target, s.reason, s.teacher_cannot_teach) == (deficient, target, reason, False)
        assert (s.teacher, s.student) == (TEACHER_ACC[s.module], STUDENT_ACC[s.module])
    assert {s.module: s.ratio for s in scores}["facts"] == pytest.approx(0.8, abs=1e-12)


def test_mastered_criterion_is_a_parameter() -> None:
    # Counting only deficiency as "unmastered", facts (Δ 0.2) no longer needs teaching.
    scores = diagnose_scores(TEACHER_ACC, STUDENT_ACC, GRAPH, CFG, mastered=lambda s: not s.deficient)
    assert [s.module for s in scores if s.target] == ["mul", "word"]
    # A lower bar (ratio ≥ 0.8) also masters facts; a higher one (≥ 1.0) leaves it unmastered.
    low_bar = diagnose_scores(TEACHER_ACC, STUDENT_ACC, GRAPH, CFG, mastered=mastered_by_ratio(0.8))
    high_bar = diagnose_scores(TEACHER_ACC, STUDENT_ACC, GRAPH, CFG, mastered=mastered_by_ratio(1.0))
    assert [s.module for s in low_bar if s.target] == ["mul", "word"]
    assert [s.module for s in high_bar if s.target] == ["facts", "mul", "word"]


def test_teacher_cannot_teach_is_flagged_and_never_a_target() -> None:
    # ghost → word; teacher 0/10: Δ 0, flagged; severity 0.7·0 + 0.3·1 = 0.3.
    # word now has neighbours mul and ghost, both Dep 1: severity unchanged at 0.825.
    teacher = {**TEACHER_ACC, "ghost": P(0)}
    student = {**STUDENT_ACC, "ghost": P(0)}
    scores = diagnose_scores(teacher, student, [*GRAPH, Edge("ghost", "word", "declared")], CFG)
    by = {s.module: s for s in scores}
    assert (by["ghost"].gap, by["ghost"].teacher_cannot_teach, by["ghost"].deficient) == (0.0, True, False)
    assert by["ghost"].ratio is None
    assert by["ghost"].severity == pytest.approx(0.3, abs=1e-12)
    assert not by["ghost"].target
    assert by["word"].severity == pytest.approx(0.825, abs=1e-12)
    assert [s.module for s in scores if s.target] == ["facts", "mul", "word"]


def _score(module: str, sev: float, deficient: bool = True, ratio_10: int = 5) -> ModuleScore:
    student = P(ratio_10)
    return ModuleScore(module, P(10), student, 1 - ratio_10 / 10, deficient, False, sev)


def test_top_fraction_ties_broken_by_module_id() -> None:
    scores = [_score("c", 0.5), _score("a", 0.5), _score("b", 0.5), _score("d", 0.9, deficient=False)]
    # 3 deficient, ⌈0.5·3⌉ = 2: equal severities → a, b by id; d (not deficient) never a top target.
    marked = select_targets(scores, [], 0.5)
    assert [(s.module, s.target) for s in marked] == [("c", False), ("a", True), ("b", True), ("d", False)]


def test_top_fraction_count() -> None:
    many = [_score(f"m{i:02d}", i / 100) for i in range(25)]
    # ⌈0.28·25⌉ = 7 — the float product is 7.000000000000001 and must not round up to 8: m18..m24.
    assert [s.module for s in select_targets(many, [], 0.28) if s.target] == [f"m{i}" for i in range(18, 25)]
    # ⌈0.01·3⌉ = 1: at least one target when any module is deficient.
    assert sum(s.target for s in select_targets(many[:3], [], 0.01)) == 1
    # Nothing deficient → nothing to teach.
    assert not any(s.target for s in select_targets([_score("a", 0.9, deficient=False)], [], 1.0))


def test_prerequisite_of_several_targets_names_them_all() -> None:
    scores = [_score("t1", 0.9), _score("t2", 0.8), _score("p", 0.1, deficient=False, ratio_10=5)]
    edges = [Edge("p", "t1", "declared"), Edge("p", "t2", "declared")]
    marked = {s.module: s.reason for s in select_targets(scores, edges, 1.0)}
    # p: not deficient but ratio 0.5 < 0.9 → unmastered prerequisite of both targets.
    assert marked == {"t1": TOP_SEVERITY, "t2": TOP_SEVERITY, "p": "prerequisite of t1, t2"}


def test_a_top_target_that_is_also_a_prerequisite_keeps_top_severity() -> None:
    scores = [_score("t", 0.9), _score("p", 0.8)]
    marked = {s.module: s.reason for s in select_targets(scores, [Edge("p", "t", "declared")], 1.0)}
    assert marked == {"t": TOP_SEVERITY, "p": TOP_SEVERITY}


# --------------------------------------------------------------------------------------- plumbing


def test_determinism_under_input_order() -> None:
    first = diagnose_scores(TEACHER_ACC, STUDENT_ACC, GRAPH, CFG)
    reordered = diagnose_scores(
        dict(reversed(TEACHER_ACC.items())), dict(reversed(STUDENT_ACC.items())), GRAPH[::-1], CFG
    )
    assert [s.to_dict() for s in reordered] == [s.to_dict() for s in first]
    edges = measured_edges(TRACKING, TEACHER, CFG)
    shuffled = [dict(reversed(s.items())) for s in TRACKING]
    assert measured_edges(shuffled, dict(reversed(TEACHER.items())), CFG) == edges
    assert build_graph("ba", [], [], edges[::-1]) == build_graph("ab", [], [], edges)


def test_scores_round_trip_through_json() -> None:
    scores = diagnose_scores(TEACHER_ACC, STUDENT_ACC, GRAPH, CFG)
    text = json.dumps([s.to_dict() for s in scores])
    assert [ModuleScore.from_dict(d) for d in json.loads(text)] == scores
    assert json.loads(text)[-1]["teacher"] == {"correct": 8, "n": 10}


def test_diagnose_rejects_mismatched_or_empty_probes() -> None:
    with pytest.raises(ValueError, match="different modules"):
        diagnose_scores({"a": P(5)}, {"b": P(5)}, [], CFG)
    with pytest.raises(ValueError, match="no probe results"):
        diagnose_scores({"a": Proportion(0, 0)}, {"a": P(5)}, [], CFG)

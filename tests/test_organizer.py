"""Knowledge Organizer on plain data; every expected number is computed by hand in the comments."""

from __future__ import annotations

import json

import pytest

from ioa.config import OrganizerConfig
from ioa.graph import Edge
from ioa.organizer import (
    Action,
    BridgingPlan,
    GateResult,
    RemediationPlan,
    Stage,
    StageState,
    best_gate,
    bridging_plan,
    forgetting_check,
    gate_item_count,
    gate_items_needed,
    mastery_gate,
    mastery_ratio,
    next_action,
    next_level,
    plan_stages,
    record,
    remediation_plan,
    replan,
    replay_plan,
    retention,
    start_level,
)
from ioa.stats import Proportion


def declared(prereq: str, module: str) -> Edge:
    return Edge(prereq, module, "declared")


def mods(stages: list[Stage]) -> list[tuple[str, ...]]:
    return [s.modules for s in stages]


# --- stages (Eq. 7) ------------------------------------------------------------------------------------


def test_layers_of_a_diamond():
    edges = [declared("a", "b"), declared("a", "c"), declared("b", "d"), declared("c", "d")]
    stages = plan_stages("abcd", edges, dict.fromkeys("abcd", 0.5), tau_zpd=0.15)
    assert mods(stages) == [("a",), ("b", "c"), ("d",)]
    assert [s.index for s in stages] == [0, 1, 2]
    assert [s.layer for s in stages] == [0, 1, 2]
    assert all(s.zpd_ok and s.difficulty == 0.5 and s.note == "" for s in stages)


def test_prerequisites_outside_the_targets_do_not_order_stages():
    # x is not a target (mastered): b depends only on x, so it sits in the first layer with a.
    edges = [declared("x", "b"), declared("a", "c")]
    stages = plan_stages(["a", "b", "c"], edges, {"a": 0.5, "b": 0.5, "c": 0.5}, tau_zpd=0.15)
    assert mods(stages) == [("a", "b"), ("c",)]


def test_cycles_are_broken_before_layering():
    # a→b declared, b→a proposed: the proposed edge is the weaker one and is dropped.
    edges = [declared("a", "b"), Edge("b", "a", "proposed"), declared("b", "c"), Edge("c", "a", "measured", 0.9)]
    stages = plan_stages("abc", edges, dict.fromkeys("abc", 0.5), tau_zpd=0.15)
    assert mods(stages) == [("a",), ("b",), ("c",)]


def test_missing_gap_is_an_error():
    with pytest.raises(ValueError, match=r"\['b'\]"):
        plan_stages("ab", [], {"a": 0.5}, tau_zpd=0.15)


# --- zone of proximal development (Eq. 8) ---------------------------------------------------------------


def test_zpd_splits_a_jump_hardest_later_prerequisites_kept():
    gaps = {"a": 0.4, "b": 0.5, "c": 0.5, "d": 0.6, "e": 0.95, "f": 0.7}
    edges = [declared("a", "c"), declared("a", "d"), declared("b", "e"), declared("e", "f")]
    stages = plan_stages(gaps, edges, gaps, tau_zpd=0.15)
    # layer 0 {a, b}: mean 0.45, anchored at its easiest (0.4): rise 0.05, kept.
    # layer 1 {c, d, e}: mean 0.6833 rises 0.2333 > 0.15 → the easiest prefix within 0.45 + 0.15 = 0.60 is
    #   {c, d} (mean 0.55; adding e gives 0.6833); e alone rises 0.95 - 0.55 = 0.40: unavoidable, flagged.
    # layer 2 {f}: 0.7 after 0.95 is a fall, fine. f (needs e) comes after e.
    assert mods(stages) == [("a", "b"), ("c", "d"), ("e",), ("f",)]
    assert [s.layer for s in stages] == [0, 1, 1, 2]
    assert [s.difficulty for s in stages] == pytest.approx([0.45, 0.55, 0.95, 0.7])
    assert [s.zpd_ok for s in stages] == [True, True, False, True]
    assert stages[1].note == "split from layer 1 by the ZPD rule"
    assert stages[2].note == "mean difficulty rises 0.400 > tau_zpd 0.15; no split avoids it"
    assert [s.index for s in stages] == [0, 1, 2, 3]


def test_first_stage_is_anchored_at_its_easiest_module():
    # Unconstrained it would be one stage of mean 0.625; anchored at 0.3 only a fits.
    stages = plan_stages("ab", [], {"a": 0.3, "b": 0.95}, tau_zpd=0.15)
    assert mods(stages) == [("a",), ("b",)]
    assert [s.zpd_ok for s in stages] == [True, False]


def test_previous_difficulty_constrains_the_first_stage():
    stages = plan_stages("ab", [], {"a": 0.5, "b": 0.5}, tau_zpd=0.15, previous_difficulty=0.2)
    # rise 0.3 unavoidable; equally hard modules ride along in one flagged stage rather than two.
    assert mods(stages) == [("a", "b")]
    assert not stages[0].zpd_ok


def test_rise_of_exactly_tau_is_allowed():
    # 0.45 - 0.30 is 0.15000000000000002 in floats; it must count as 0.15.
    stages = plan_stages("ab", [declared("a", "b")], {"a": 0.3, "b": 0.45}, tau_zpd=0.15)
    assert mods(stages) == [("a",), ("b",)]
    assert all(s.zpd_ok for s in stages)


def test_negative_gap_counts_as_mastered_difficulty():
    stages = plan_stages("ab", [], {"a": -0.2, "b": 0.1}, tau_zpd=0.15)
    assert stages[0].difficulty == pytest.approx(0.05)  # (0 + 0.1) / 2


# --- re-planning ------------------------------------------------------------------------------------------


def test_replan_treats_completed_modules_as_satisfied():
    edges = [declared("a", "b"), declared("b", "c"), declared("a", "d"), declared("c", "e")]
    gaps = {"a": 0.05, "b": 0.08, "c": 0.6, "d": 0.5, "e": 0.7}
    stages = replan("abcde", ["a", "b"], edges, gaps, tau_zpd=0.15, first_index=2)
    # c and d are free now (their prerequisites are done): one stage of mean 0.55, then e (0.7: +0.15).
    assert mods(stages) == [("d", "c"), ("e",)]
    assert [s.index for s in stages] == [2, 3]
    assert [s.difficulty for s in stages] == pytest.approx([0.55, 0.7])


# --- difficulty ladder ------------------------------------------------------------------------------------


def test_start_level_is_one_above_the_reliable_run():
    acc = {1: Proportion(10, 10), 2: Proportion(9, 10), 3: Proportion(5, 10), 4: Proportion(10, 10)}
    assert start_level(acc, max_level=5, tau_level=0.8) == 3  # 1.0, 0.9 pass; 0.5 stops the run
    # lcb: 10/10 has a lower bound of 0.7225 < 0.8, so not even level 1 is reliable.
    assert start_level(acc, max_level=5, tau_level=0.8, mode="lcb") == 1
    assert start_level({1: Proportion(3, 10), 2: Proportion(10, 10)}, 5, 0.8) == 1  # never skip
    assert start_level({2: Proportion(10, 10)}, 5, 0.8) == 1  # level 1 unprobed: not known solved
    assert start_level({1: Proportion(8, 10)}, 5, 0.8) == 2  # 0.8 exactly is reliable
    assert start_level(dict.fromkeys(range(1, 4), Proportion(5, 5)), 3, 0.8) == 3  # top stays top


def test_next_level_never_skips():
    assert [next_level(lv, 3) for lv in (1, 2, 3)] == [2, 3, 3]
    with pytest.raises(ValueError):
        next_level(4, 3)


# --- mastery gate (Eq. 9) -----------------------------------------------------------------------------------


def test_ratio_point_and_lcb():
    assert mastery_ratio(Proportion(19, 20), 1.0, "point") == pytest.approx(0.95)
    # Wilson lower bound of 19/20 at z = 1.96: 0.76387
    assert mastery_ratio(Proportion(19, 20), 1.0, "lcb") == pytest.approx(0.763869, abs=1e-6)
    assert mastery_ratio(Proportion(18, 20), Proportion(18, 20), "point") == pytest.approx(1.0)
    assert mastery_ratio(Proportion(5, 20), 0.0, "point") is None


def test_19_of_20_passes_point_and_fails_lcb():
    student, teacher = {"a": Proportion(19, 20)}, {"a": 1.0}
    point = mastery_gate(student, teacher, 0.9, "point")
    lcb = mastery_gate(student, teacher, 0.9, "lcb")
    assert point.passed and point.passed_modules == ("a",)
    assert not lcb.passed and lcb.failed_modules == ("a",) and lcb.binding == "a"


def test_gate_reports_every_module_and_the_binding_one():
    student = {"a": Proportion(20, 20), "b": Proportion(15, 20), "c": Proportion(17, 20), "z": Proportion(3, 20)}
    teacher = {"a": Proportion(16, 20), "b": 1.0, "c": 0.9, "z": 0.0}
    gate = mastery_gate(student, teacher, 0.9, "point")
    # ratios: a 1.0/0.8 = 1.25, b 0.75, c 0.85/0.9 = 0.9444, z ungated (teacher 0)
    assert gate.ratios["a"] == pytest.approx(1.25)
    assert gate.ratios["b"] == pytest.approx(0.75)
    assert gate.ratios["c"] == pytest.approx(0.944444, abs=1e-6)
    assert gate.ratios["z"] is None
    assert gate.passed_modules == ("a", "c")
    assert gate.failed_modules == ("b",)
    assert gate.ungated == ("z",)
    assert gate.binding == "b" and gate.min_ratio == pytest.approx(0.75)
    assert not gate.passed


def test_ratio_of_exactly_tau_passes():
    # 0.72 / 0.8 is 0.8999999999999999 in floats; it is 0.9 and must pass.
    assert mastery_gate({"a": Proportion(72, 100)}, {"a": 0.8}, 0.9, "point").passed


def test_ungated_modules_do_not_block_but_cannot_pass_alone():
    ok = mastery_gate({"a": Proportion(20, 20), "z": Proportion(0, 20)}, {"a": 1.0, "z": 0.0}, 0.9, "point")
    assert ok.passed and ok.ungated == ("z",)
    alone = mastery_gate({"z": Proportion(0, 20)}, {"z": 0.0}, 0.9, "point")
    assert not alone.passed and alone.failed_modules == () and alone.binding is None


def test_gate_needs_every_module_measured():
    with pytest.raises(ValueError, match="missing"):
        mastery_gate({"a": Proportion(1, 1)}, {}, 0.9, "point")


def test_gate_items_needed():
    # n/n has Wilson lower bound n/(n + z²), z² = 3.8415: n ≥ τ z² / (1 - τ).
    assert gate_items_needed(0.9, "lcb", 1000) == 35  # 34.57 → 35 (34/34 = 0.8985, 35/35 = 0.9011)
    assert gate_items_needed(0.84, "lcb", 1000) == 21  # 20/20 = 0.8389, just short of 0.84
    assert gate_items_needed(0.93, "lcb", 1000) == 52  # 51.04 → 52 (50/50 = 0.9287)
    assert gate_items_needed(0.9, "point", 1000) == 1
    with pytest.raises(ValueError, match="more than 30"):
        gate_items_needed(0.9, "lcb", 30)
    with pytest.raises(ValueError):
        gate_items_needed(1.0, "lcb", 1000)


def test_gate_item_count_is_the_larger_of_config_and_need():
    assert gate_item_count(OrganizerConfig()) == 50  # max(50, 35)
    assert gate_item_count(OrganizerConfig(gate_items_per_module=20)) == 35
    assert gate_item_count(OrganizerConfig(gate_items_per_module=20, gate_mode="point")) == 20


# --- the stage life-cycle ------------------------------------------------------------------------------------

STAGE = Stage(0, ("a", "b"), 0.5, 0)
PASS = mastery_gate({"a": Proportion(50, 50), "b": Proportion(50, 50)}, {"a": 1.0, "b": 1.0}, 0.9, "lcb")
FAIL = mastery_gate({"a": Proportion(50, 50), "b": Proportion(30, 50)}, {"a": 1.0, "b": 1.0}, 0.9, "lcb")


def drive(state: StageState, gates: list[GateResult]) -> tuple[list[Action], StageState]:
    """Run the life-cycle, answering each GATE with the next result; returns the actions taken."""
    gates = list(gates)
    actions: list[Action] = []
    while (action := next_action(state)) not in (Action.DONE, Action.GIVE_UP, Action.STOP):
        actions.append(action)
        state = record(state, action, gates.pop(0) if action == Action.GATE else None)
    actions.append(action)
    return actions, state


S, T, G, R, B = Action.SYNTHESISE, Action.TRAIN, Action.GATE, Action.REMEDIATE, Action.BRIDGE


def test_fixture_gates():
    assert PASS.passed and not FAIL.passed and FAIL.failed_modules == ("b",)


def test_mastered_stage_bridges_then_is_done():
    actions, state = drive(StageState.start(STAGE, OrganizerConfig(), has_next_stage=True), [PASS])
    assert actions == [S, T, G, B, Action.DONE]
    assert state.outcome == "mastered"


def test_last_stage_does_not_bridge():
    actions, _ = drive(StageState.start(STAGE, OrganizerConfig(), has_next_stage=False), [PASS])
    assert actions == [S, T, G, Action.DONE]


def test_failing_gate_remediates_r_max_times_then_gives_up():
    state = StageState.start(STAGE, OrganizerConfig(max_remediation_rounds=3), has_next_stage=True)
    actions, state = drive(state, [FAIL] * 4)
    assert actions == [S, T, G, R, T, G, R, T, G, R, T, G, Action.GIVE_UP]
    assert state.rounds == 3 and len(state.gates) == 4
    assert state.outcome == "not_mastered"


def test_failing_gate_stops_the_run_when_configured():
    config = OrganizerConfig(max_remediation_rounds=1, on_unmastered="stop")
    actions, state = drive(StageState.start(STAGE, config, has_next_stage=True), [FAIL, FAIL])
    assert actions == [S, T, G, R, T, G, Action.STOP]
    assert state.outcome == "not_mastered"


def test_remediation_that_works_goes_on_to_bridge():
    actions, state = drive(StageState.start(STAGE, OrganizerConfig(), True), [FAIL, FAIL, PASS])
    assert actions == [S, T, G, R, T, G, R, T, G, B, Action.DONE]
    assert state.rounds == 2 and state.outcome == "mastered"


def test_zero_rounds_gives_up_at_once():
    actions, _ = drive(StageState.start(STAGE, OrganizerConfig(max_remediation_rounds=0), True), [FAIL])
    assert actions == [S, T, G, Action.GIVE_UP]


def test_nothing_to_remediate_gives_up_without_rounds():
    ungated = mastery_gate({"z": Proportion(0, 20)}, {"z": 0.0}, 0.9, "point")
    actions, state = drive(StageState.start(Stage(0, ("z",), 0.0, 0), OrganizerConfig(), True), [ungated])
    assert actions == [S, T, G, Action.GIVE_UP] and state.rounds == 0


def test_out_of_order_steps_are_refused():
    state = StageState.start(STAGE, OrganizerConfig(), True)
    with pytest.raises(ValueError, match="next step is synthesise"):
        record(state, Action.TRAIN)
    state = record(record(state, S), T)
    with pytest.raises(ValueError, match="gate result"):
        record(state, G)


def test_remediation_plan_failing_only_smaller_and_easier():
    state = StageState.start(Stage(0, ("a", "b", "c"), 0.5, 0), OrganizerConfig(), True)
    fail = mastery_gate(
        {"a": Proportion(50, 50), "b": Proportion(30, 50), "c": Proportion(20, 50)},
        {"a": 1.0, "b": 1.0, "c": 1.0},
        0.9,
        "lcb",
    )
    state = record(record(record(state, S), T), G, fail)
    plan = remediation_plan(state, {"a": 40, "b": 40, "c": 25}, 0.5, levels={"a": 3, "b": 3, "c": 1})
    assert plan.modules == ("b", "c") and plan.round == 1 and plan.easier_by == 1
    assert plan.samples == {"b": 20, "c": 13}  # 0.5·40 = 20; 0.5·25 = 12.5 → 13 (halves round up)
    assert plan.levels == {"b": 2, "c": 1}  # one notch down, floored at level 1
    state = record(record(record(state, R), T), G, fail)
    second = remediation_plan(state, 40, 0.5, levels={"a": 3, "b": 3, "c": 1})
    assert second.round == 2 and second.easier_by == 2 and second.levels == {"b": 1, "c": 1}
    assert second.samples == {"b": 20, "c": 20}
    with pytest.raises(ValueError):
        remediation_plan(StageState.start(STAGE, OrganizerConfig(), True), 40, 0.5)


def test_remediation_at_the_measured_frontier_keeps_its_levels():
    state = StageState.start(Stage(0, ("a", "b"), 0.5, 0), OrganizerConfig(), True)
    fail = mastery_gate({"a": Proportion(10, 50), "b": Proportion(50, 50)}, {"a": 1.0, "b": 1.0}, 0.9, "lcb")
    state = record(record(record(state, S), T), G, fail)
    plan = remediation_plan(state, 40, 0.5, levels={"a": 3, "b": 1}, step_down=False)
    assert plan.modules == ("a",) and plan.levels == {"a": 3}  # where the gate found the student, not below
    assert plan.easier_by == 1  # the Adapter's prompt is still one notch easier


# --- bridging ------------------------------------------------------------------------------------------------


def test_bridging_plan():
    stage, nxt = Stage(0, ("a", "b"), 0.4, 0), Stage(1, ("c",), 0.5, 1)
    plan = bridging_plan(stage, nxt, stage_size=45, bridging_fraction=0.1, levels={"a": 2, "b": 3}, max_level=3)
    # 0.1 · 45 = 4.5 → 5 samples, spread 3 + 2; one level up, capped at 3.
    assert plan.samples == {"a": 3, "b": 2}
    assert plan.levels == {"a": 3, "b": 3} and plan.harder_by == 1
    assert (plan.stage_index, plan.next_stage_index) == (0, 1)
    # Only b feeds c: the whole batch goes to b.
    fed = bridging_plan(stage, nxt, 45, 0.1, edges=[declared("b", "c"), declared("x", "c")])
    assert fed.samples == {"b": 5} and fed.levels == {}
    # A tiny stage still gets one bridging sample; a zero fraction none.
    assert bridging_plan(stage, nxt, 3, 0.1).samples == {"a": 1}
    assert bridging_plan(stage, nxt, 45, 0.0).samples == {}


# --- forgetting guard -----------------------------------------------------------------------------------------


def test_forgetting_check_point_and_lcb():
    before = {"a": Proportion(20, 20), "b": Proportion(19, 20), "c": Proportion(18, 20)}
    now = {"a": Proportion(20, 20), "b": Proportion(15, 20), "c": Proportion(17, 20), "new": Proportion(0, 20)}
    teacher = {"a": 1.0, "b": 1.0, "c": 1.0}
    # point: a 1.0, b 0.75, c 0.85 → b and c fell below 0.9; "new" was never mastered and is not checked.
    assert forgetting_check(before, now, teacher, 0.9, "point") == ["b", "c"]
    # lcb on 20 items: even 20/20 (0.839) is below 0.9 → everything looks fallen.
    assert forgetting_check(before, now, teacher, 0.9, "lcb") == ["a", "b", "c"]
    with pytest.raises(ValueError):
        forgetting_check(before, {"a": Proportion(20, 20)}, teacher, 0.9, "point")


def test_replay_plan_sizes():
    # 20% of a stage of 100 = 20 per fallen module, never more than its earlier data.
    assert replay_plan(["b", "c", "d"], 100, 0.2, {"b": 60, "c": 10}) == {"b": 20, "c": 10, "d": 0}
    assert replay_plan(["b"], 48, 0.2, {"b": 60}) == {"b": 10}  # 9.6 → 10
    assert replay_plan([], 100, 0.2, {}) == {}


def test_retention_per_module():
    before = {"a": Proportion(20, 20), "b": Proportion(19, 20), "c": Proportion(0, 20)}
    after = {"a": Proportion(20, 20), "b": Proportion(15, 20), "c": Proportion(4, 20)}
    r = retention(before, after)
    assert r["a"] == 1.0
    assert r["b"] == pytest.approx(15 / 19)
    assert r["c"] is None


# --- JSON for curriculum.json ----------------------------------------------------------------------------------


def roundtrip(obj):
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))


def test_everything_round_trips_through_json():
    stages = plan_stages("ab", [], {"a": 0.3, "b": 0.95}, tau_zpd=0.15)
    assert [roundtrip(s) for s in stages] == stages
    assert roundtrip(FAIL) == FAIL
    state = StageState.start(STAGE, OrganizerConfig(), True)
    state = record(record(record(record(state, S), T), G, FAIL), R)
    back = roundtrip(state)
    assert back == state and next_action(back) == Action.TRAIN
    assert json.loads(json.dumps(state.to_dict()))["next_action"] == "train"
    plan = RemediationPlan(0, 1, ("b",), {"b": 5}, 1, {"b": 2})
    assert roundtrip(plan) == plan
    bridge = BridgingPlan(0, 1, {"a": 3}, 1, {"a": 2})
    assert roundtrip(bridge) == bridge


def test_review_plan_covers_every_taught_module_and_keeps_larger_replay() -> None:
    from ioa.organizer import review_plan

    plan = review_plan(["a", "b", "c"], samples_per_module=40, review_fraction=0.25, replay={"b": 16})
    assert plan == {"a": 10, "b": 16, "c": 10}
    # A smaller replay share never shrinks the review; review off leaves only the forgetting guard's replay.
    assert review_plan(["a"], 40, 0.25, {"a": 3}) == {"a": 10}
    assert review_plan(["a", "b"], 40, 0.0, {"b": 8}) == {"b": 8}
    assert review_plan([], 40, 0.25, {}) == {}


# --- the best round of an unmastered stage ----------------------------------------------------------------


def test_best_gate_is_the_highest_mean_ratio_earliest_on_ties():
    teacher = {"a": 1.0, "b": 0.5}

    def gate(a: int, b: int):
        return mastery_gate({"a": Proportion(a, 10), "b": Proportion(b, 10)}, teacher, 0.9, "point")

    # Round 1 has the better mean ratio (0.6 + 0.8)/2 = 0.7 vs (0.8 + 0.4)/2 = 0.6, though its min is lower.
    assert best_gate([gate(8, 2), gate(6, 4), gate(1, 1)]) == 1
    assert best_gate([gate(5, 5), gate(5, 5)]) == 0  # a tie keeps the earlier (less trained) student
    assert best_gate([]) is None
    ungated = mastery_gate({"a": Proportion(3, 10)}, {"a": 0.0}, 0.9, "point")
    assert best_gate([ungated]) is None

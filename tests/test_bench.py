"""`ioa bench`: the statistics and the budget check on constructed data with known answers, the ablation
switches on plain data, and the whole bench on scripted fake models (tests/bench_fakes.py)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bench_fakes import FakeStudent, FakeTeacher, base_student, patch_models, solve, write_gsm8k
from ioa.adapter import PLAIN_TEXT, STRATEGY_TEXT, teaching_messages
from ioa.bench import ABLATIONS, TITLES, cell_config, forgetting, markdown, run_bench
from ioa.config import (
    BENCH_METHODS,
    AdapterConfig,
    BenchConfig,
    OrganizerConfig,
    RunConfig,
    bench_config_from_dict,
    load_bench_config,
)
from ioa.diagnosis import Diagnosis
from ioa.domains import ArithmeticDomain
from ioa.domains.base import Item, Module
from ioa.errors import BudgetError, ConfigError
from ioa.graph import Edge
from ioa.identifier import ModuleScore
from ioa.matching import Spend, TokenBudget, check_budget, generate_within
from ioa.models.base import ChatRequest, Generation, SamplingParams
from ioa.organizer import Action, StageState, next_action, record
from ioa.run import plan_curriculum
from ioa.stats import Proportion, mean_std, paired_bootstrap
from ioa.teaching import DataRequest, ladder, request_items

# ------------------------------------------------------------------------------------ paired bootstrap


def test_identical_methods_give_p_one_half() -> None:
    scores = [[1, 0, 1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0, 0, 1]]
    result = paired_bootstrap(scores, scores, resamples=2000, seed=3)
    assert result.delta == 0.0
    assert result.p_value == 0.5
    assert (result.n_items, result.n_seeds) == (8, 3)


def test_ioa_right_wherever_the_baseline_is_wrong_gives_p_zero() -> None:
    # IOA is right on every item the baseline gets wrong (and on the rest both are right).
    ioa = [[1] * 10, [1] * 10]
    base = [[0, 1, 0, 1, 0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 0, 0, 1, 1, 0, 0]]
    result = paired_bootstrap(ioa, base, resamples=5000)
    assert result.delta > 0
    assert result.p_value < 1 / 5000


def test_baseline_right_wherever_ioa_is_wrong_gives_p_one() -> None:
    result = paired_bootstrap([[0, 0, 0, 0], [1, 0, 0, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]], resamples=1000)
    assert result.p_value == 1.0
    assert result.delta == -0.875


def test_one_winning_item_matches_the_closed_form() -> None:
    # d = (1, 0, ..., 0) over n items: a resample's mean is 0 exactly when it misses item 0 (probability
    # (1 - 1/n)^n) and positive otherwise, so p = ½·(1 - 1/n)^n.
    n = 10
    result = paired_bootstrap([[1] + [0] * (n - 1)], [[0] * n], resamples=40_000, seed=1)
    expected = 0.5 * (1 - 1 / n) ** n
    assert abs(result.p_value - expected) < 0.01  # Monte Carlo sd ≈ 0.002


def test_items_are_paired_across_seeds() -> None:
    # Seed 0 favours IOA on item 0, seed 1 favours the baseline on item 0: averaged per item, no difference.
    ioa = [[1, 0], [0, 1]]
    base = [[0, 0], [1, 1]]
    assert paired_bootstrap(ioa, base, resamples=1000).p_value == 0.5


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    a = [[1, 0, 1, 1, 0, 1, 0, 1, 1, 0]]
    b = [[0, 0, 1, 0, 1, 1, 0, 0, 1, 0]]
    assert paired_bootstrap(a, b, 3000, seed=7) == paired_bootstrap(a, b, 3000, seed=7)


@pytest.mark.parametrize(("a", "b"), [([[1, 0]], [[1, 0], [1, 0]]), ([[1, 0]], [[1, 0, 1]]), ([], [])])
def test_bootstrap_needs_paired_data(a: list[list[int]], b: list[list[int]]) -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(a, b)


def test_mean_std() -> None:
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([0.4]) == (0.4, None)
    with pytest.raises(ValueError):
        mean_std([])


# ------------------------------------------------------------------------------------- the budget check

BUDGET = Spend(samples=100, teacher_tokens=10_000)


@pytest.mark.parametrize("samples", [95, 96, 100, 104, 105])
def test_samples_within_five_percent_match(samples: int) -> None:
    check = check_budget("standard", Spend(samples, 10_000, "samples"), BUDGET)
    assert check.status == "matched"
    assert check.sample_ratio == samples / 100


@pytest.mark.parametrize("samples", [94, 106])
def test_samples_six_percent_off_are_an_error(samples: int) -> None:
    with pytest.raises(BudgetError) as err:
        check_budget("self_instruct", Spend(samples, 10_000, "plan"), BUDGET)
    assert "self_instruct" in str(err.value) and f"{samples} verified samples" in str(err.value)
    assert err.value.fix


def test_tokens_up_to_five_percent_over_are_allowed_and_six_are_not() -> None:
    assert check_budget("llm2llm", Spend(100, 10_400, "samples"), BUDGET).status == "matched"
    with pytest.raises(BudgetError, match="10,600 teacher tokens"):
        check_budget("llm2llm", Spend(100, 10_600, "samples"), BUDGET)


def test_reaching_n_on_fewer_tokens_is_reported_as_cheaper() -> None:
    check = check_budget("standard", Spend(100, 4_000, "samples"), BUDGET)
    assert check.status == "cheaper"
    assert check.token_ratio == 0.4
    assert "×0.40" in check.text()


def test_running_out_of_tokens_before_n_is_an_error_or_recorded() -> None:
    short = Spend(60, 9_900, "tokens")
    with pytest.raises(BudgetError, match="spent T before reaching N") as err:
        check_budget("self_instruct", short, BUDGET)
    assert "on_shortfall" in err.value.fix
    assert check_budget("self_instruct", short, BUDGET, on_shortfall="record").status == "token_limited"


def test_stopping_short_with_tokens_left_is_under_used() -> None:
    with pytest.raises(BudgetError, match="tokens left"):
        check_budget("llm2llm", Spend(60, 5_000, "plan"), BUDGET)
    assert check_budget("llm2llm", Spend(60, 5_000, "plan"), BUDGET, on_shortfall="record").status == "under_used"


def test_overspending_is_an_error_even_when_shortfalls_are_recorded() -> None:
    with pytest.raises(BudgetError):
        check_budget("standard", Spend(100, 11_000, "tokens"), BUDGET, on_shortfall="record")
    with pytest.raises(BudgetError):
        check_budget("standard", Spend(110, 9_000, "samples"), BUDGET, on_shortfall="record")


def test_reference_and_exempt_methods() -> None:
    assert check_budget("ioa", BUDGET, BUDGET, reference=True).status == "reference"
    assert check_budget("undistilled", Spend(0, 0), BUDGET, exempt=True).status == "exempt"


# ---------------------------------------------------------------------------------- the token budget


class CountingTeacher:
    name = "counting"
    fingerprint = "counting"

    def __init__(self, prompt_tokens: int = 20, completion_tokens: int = 30) -> None:
        self.sent = 0
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens

    def generate(self, requests: list[ChatRequest]) -> list[Any]:
        from ioa.models.base import Generation

        self.sent += len(requests)
        return [Generation("x", self.prompt_tokens, self.completion_tokens) for _ in requests]


def _request(max_tokens: int = 100) -> ChatRequest:
    return ChatRequest.of([{"role": "user", "content": "x" * 40}], SamplingParams(max_tokens=max_tokens))


def test_a_call_is_sent_only_when_its_worst_case_fits() -> None:
    budget = TokenBudget(left=300)
    worst = budget.worst_case(_request())
    assert worst == math.ceil(1.1 * 40 * 0.5) + 8 + 8 + 100
    assert budget.fitting([_request()] * 5) == 300 // worst
    assert not budget.exhausted
    assert TokenBudget(left=worst - 1).fitting([_request()]) == 0


def test_generate_within_sends_the_fitting_prefix_and_counts_it() -> None:
    teacher = CountingTeacher()
    budget = TokenBudget(left=400)
    worst = budget.worst_case(_request())
    replies = generate_within(teacher, [_request()] * 8, budget)
    assert len(replies) == teacher.sent == 400 // worst
    assert budget.left == 400 - 50 * len(replies)
    spent_before = teacher.sent
    while generate_within(teacher, [_request()] * 8, budget):
        pass
    assert budget.exhausted
    assert budget.left >= 0  # never past the budget
    assert teacher.sent > spent_before
    assert generate_within(teacher, [_request()] * 3, None) and teacher.sent > 0  # no budget: all sent


def test_the_completion_allowance_learns_from_replies() -> None:
    budget = TokenBudget(left=10_000)
    first = budget.worst_case(_request(max_tokens=400))
    generate_within(CountingTeacher(completion_tokens=30), [_request(max_tokens=400)] * 8, budget)
    assert budget.worst_case(_request(max_tokens=400)) < first  # 2 × 30 + 8 instead of 400
    assert budget.worst_case(_request(max_tokens=40)) <= budget.worst_case(_request(max_tokens=400))


# ------------------------------------------------------------------------------------------ forgetting


def test_forgetting_is_the_largest_drop_of_a_module_mastered_before() -> None:
    teacher = {"a": 1.0, "b": 0.8, "c": 1.0}
    before = {"a": 0.95, "b": 0.76, "c": 0.3}  # a and b mastered (ratio ≥ 0.9), c not
    after = {"a": 0.85, "b": 0.56, "c": 0.0}  # c dropped most, but it was never mastered
    assert forgetting(before, after, teacher, 0.9) == pytest.approx(0.2)
    assert forgetting(before, {"a": 1.0, "b": 0.9, "c": 0.3}, teacher, 0.9) == 0.0
    assert forgetting({"c": 0.3}, {"c": 0.0}, teacher, 0.9) is None


# ------------------------------------------------------------------------------- the ablation switches


def _diagnosis(targets: list[str], modules: list[str], edges: list[Edge] | None = None) -> Diagnosis:
    scores = [
        ModuleScore(m, Proportion(9, 10), Proportion(2, 10), 0.78, True, False, 0.6, target=m in targets)
        for m in modules
    ]
    return Diagnosis(scores, edges or [], [])


def test_without_identifier_every_selected_module_is_taught() -> None:
    diagnosis = _diagnosis(["multi_digit_add"], ["multi_digit_add", "times_tables", "fractions"])
    on, _ = plan_curriculum(RunConfig(), diagnosis, 5)
    off, levels = plan_curriculum(RunConfig(identifier={"enabled": False}), diagnosis, 5)
    assert [m for s in on for m in s.modules] == ["multi_digit_add"]
    assert sorted(m for s in off for m in s.modules) == ["fractions", "multi_digit_add", "times_tables"]
    assert set(levels) == {"fractions", "multi_digit_add", "times_tables"}


def test_without_organizer_one_ungated_stage_holds_every_target() -> None:
    modules = ["single_digit_add", "multi_digit_add"]
    diagnosis = _diagnosis(modules, modules, [Edge("single_digit_add", "multi_digit_add", "declared")])
    staged, _ = plan_curriculum(RunConfig(), diagnosis, 5)
    one, _ = plan_curriculum(RunConfig(organizer={"staged": False}), diagnosis, 5)
    assert [s.modules for s in staged] == [("single_digit_add",), ("multi_digit_add",)]
    assert [s.modules for s in one] == [("single_digit_add", "multi_digit_add")]

    state = StageState.start(one[0], OrganizerConfig(staged=False), has_next_stage=False)
    actions = []
    while (action := next_action(state)) is not Action.DONE:
        actions.append(action)
        state = record(state, action)
    assert actions == [Action.SYNTHESISE, Action.TRAIN]
    assert state.outcome == "ungated" and not state.bridge and state.max_rounds == 0
    gated = StageState.start(staged[0], OrganizerConfig(), has_next_stage=True)
    gated = record(record(gated, Action.SYNTHESISE), Action.TRAIN)
    assert next_action(gated) is Action.GATE
    assert StageState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_without_adapter_the_teacher_gets_a_plain_request() -> None:
    module = Module("fractions", "Fractions")
    item = Item("i", "fractions", "What is 1/2 + 1/3?", "5/6")
    adapted = teaching_messages(module, item, AdapterConfig(), easier=1)[0]["content"]
    plain = teaching_messages(module, item, AdapterConfig(enabled=False), easier=1, representation="bare")
    assert all(text in adapted for text in STRATEGY_TEXT.values())
    assert plain[0]["content"].startswith(PLAIN_TEXT)
    assert not any(text in plain[0]["content"] for text in STRATEGY_TEXT.values())
    assert "struggling" not in plain[0]["content"] and "answer keys" not in plain[0]["content"]
    assert plain[1]["content"] == item.prompt


def test_without_adapter_items_ignore_the_level_ladder() -> None:
    domain = ArithmeticDomain()
    req = DataRequest("multi_digit_add", 10, 1, "steps", rungs=3)
    ladder_levels = [i.level for i in request_items(domain, req, AdapterConfig(), 0)]
    flat_levels = [i.level for i in request_items(domain, req, AdapterConfig(enabled=False), 0)]
    assert sorted(ladder_levels) == sorted(ladder(1, 5, 10, 3)) == [1] * 6 + [2] * 3 + [3]  # the ladder from 1
    assert sorted(set(flat_levels)) == [1, 2, 3, 4, 5] and flat_levels.count(1) == 2  # even over all levels


def test_cell_config_sets_each_switch_and_the_budget() -> None:
    cfg = BenchConfig(run=RunConfig(seed=10, training={"seed": 3}))
    budget = Spend(40, 9000)
    ioa = cell_config(cfg, "ioa", 2, "base-dir")
    assert (ioa.seed, ioa.training.seed, ioa.student.spec, ioa.name) == (12, 5, "base-dir", "ioa")
    assert ioa.run_dir == Path("benches/bench/seed-2/ioa")
    assert not ioa.budget.active and ioa.identifier.enabled and ioa.organizer.staged and ioa.adapter.enabled
    switched = {m: cell_config(cfg, m, 0, "b", budget, taught=3) for m in ABLATIONS}
    assert not switched["no_identifier"].identifier.enabled
    assert not switched["no_organizer"].organizer.staged
    assert not switched["no_adapter"].adapter.enabled
    for config in switched.values():
        assert (config.budget.max_samples, config.budget.max_teacher_tokens) == (40, 9000)
        assert config.adapter.samples_per_module == 14  # ceil(40 / 3)
    with pytest.raises(ValueError):
        cell_config(cfg, "no_adapter", 0, "b")


def test_ablations_are_off_by_default() -> None:
    config = RunConfig()
    assert config.identifier.enabled and config.organizer.staged and config.adapter.enabled
    assert not config.budget.active


# ------------------------------------------------------------------------------ the bench, on fake models

MODULES = ["multi_digit_add", "times_tables"]  # no prerequisite between them: IOA targets one, not both


def _bench_config(tmp: Path, adapter: dict[str, Any] | None = None, **over: Any) -> BenchConfig:
    raw: dict[str, Any] = {
        "name": "fake", "benches_dir": str(tmp / "benches"), "seeds": 2,
        "run": {
            "student": {"spec": str(base_student(tmp / "base"))},
            "domain": {"name": "arithmetic", "modules": MODULES},
            "identifier": {"probes_per_module": 6},
            "organizer": {"gate_items_per_module": 8, "gate_mode": "point", "max_remediation_rounds": 1},
            "adapter": {"samples_per_module": 16, "pilot_samples_per_module": 4, "pilot_eval_items": 6,
                        "teacher_max_tokens": 96},
            "teacher": {"spec": "fake", "max_tokens": 64},
            "evaluation": {"benchmark_items_per_module": 6},
        },
        "benchmarks": {"domain_items_per_module": 10, "gsm8k_items": 4, "gsm8k_path": str(write_gsm8k(tmp / "gsm8k"))},
        "budget": {"on_shortfall": "record"},
        "bootstrap": {"resamples": 500},
    }
    raw["run"]["adapter"].update(adapter or {})
    raw.update(over)
    return bench_config_from_dict(raw)


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[BenchConfig, dict[str, Any]]:
    """The fake bench, run with relative paths (as `ioa bench` is, from the repository root)."""
    patch_models(monkeypatch)
    monkeypatch.chdir(tmp_path)
    cfg = _bench_config(Path("."))
    return cfg, run_bench(cfg, teacher=FakeTeacher())


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]


def test_bench_json_holds_every_method_seed_and_benchmark(bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    cfg, _ = bench
    on_disk = json.loads((cfg.bench_dir / "bench.json").read_text())
    assert on_disk["methods"] == list(BENCH_METHODS) and on_disk["seeds"] == [0, 1]
    assert set(on_disk["benchmarks"]) == {"arithmetic", "gsm8k"}
    assert len(on_disk["benchmarks"]["arithmetic"]["items"]) == 20
    assert len(on_disk["benchmarks"]["gsm8k"]["items"]) == 4
    cells = {(c["method"], c["seed"]): c for c in on_disk["cells"]}
    assert set(cells) == {(m, s) for m in BENCH_METHODS for s in (0, 1)}
    for cell in cells.values():
        for name, items in (("arithmetic", 20), ("gsm8k", 4)):
            res = cell["results"][name]
            assert len(res["correct"]) == items  # per-item correctness: the bootstrap can be recomputed
            assert res["accuracy"] == sum(res["correct"]) / items
    for method in BENCH_METHODS:
        assert set(on_disk["summary"][method]["benchmarks"]) == {"arithmetic", "gsm8k"}
        if method != "ioa":
            assert set(on_disk["significance"][method]) == {"arithmetic", "gsm8k"}
    # The p-values are those of the stored per-item results.
    a = [cells[("ioa", s)]["results"]["arithmetic"]["correct"] for s in (0, 1)]
    b = [cells[("standard", s)]["results"]["arithmetic"]["correct"] for s in (0, 1)]
    assert on_disk["significance"]["standard"]["arithmetic"] == paired_bootstrap(a, b, 500, 0).to_dict()
    md = (cfg.bench_dir / "bench.md").read_text()
    assert all(TITLES[m] in md for m in BENCH_METHODS) and "verified training samples N" in md
    # Student-side compute beside the budget: IOA trains per stage and per remedial round, the baselines once
    # (LLM2LLM once per round), the undistilled student never.
    trainings = {m: cells[(m, 0)]["training"]["trainings"] for m in BENCH_METHODS}
    assert trainings["undistilled"] == 0 and trainings["standard"] == 1
    assert trainings["llm2llm"] == 1 + cfg.baselines.llm2llm_rounds
    assert trainings["ioa"] >= 2 and trainings["no_organizer"] >= 1
    assert cells[("standard", 0)]["training"]["examples"] == cells[("standard", 0)]["spend"]["samples"]


def test_every_method_keeps_to_the_budget(bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    _, result = bench
    for cell in result["cells"]:
        b = cell["budget"]
        n, t = result["budgets"][str(cell["seed"])]["samples"], result["budgets"][str(cell["seed"])]["teacher_tokens"]
        assert (b["budget_samples"], b["budget_tokens"]) == (n, t)
        if cell["method"] == "undistilled":
            assert b["status"] == "exempt" and cell["spend"]["teacher_tokens"] == 0
            continue
        assert b["teacher_tokens"] <= 1.05 * t
        assert b["samples"] <= 1.05 * n
        assert b["status"] in ("reference", "matched", "cheaper", "token_limited", "under_used")
        if b["status"] == "token_limited":
            assert cell["spend"]["stopped_by"] == "tokens"
        else:
            assert b["samples"] >= 0.95 * n


def test_the_ablations_really_differ(bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    cfg, _ = bench
    seed0 = cfg.bench_dir / "seed-0"

    def data(method: str) -> list[dict[str, Any]]:
        return [json.loads(line) for p in sorted((seed0 / method).rglob("data*.jsonl")) if "student" not in str(p)
                for line in p.read_text().splitlines()]

    ioa_modules = {d["module"] for d in data("ioa")}
    assert len(ioa_modules) == 1  # the Identifier picked one of the two deficient modules
    assert {d["module"] for d in data("no_identifier")} == set(MODULES)
    events = {m: [e["event"] for e in _events(seed0 / m)] for m in ("ioa", "no_organizer", "no_adapter")}
    assert "gate" in events["ioa"] and "gate" not in events["no_organizer"]
    assert "calibrated" in events["ioa"] and "calibrated" not in events["no_adapter"]
    plain = data("no_adapter")
    assert plain and all(d["representation"] == "plain" and d["lineage"]["strategies"] == [] for d in plain)
    curriculum = json.loads((seed0 / "no_organizer" / "curriculum.json").read_text())
    assert len(curriculum["stages"]) == 1 and curriculum["states"]["0"]["outcome"] == "ungated"
    # An ablation whose budget is spent does not remediate: the gate failed, but no remedial data follows.
    spent = [(seed, m, e) for seed in ("seed-0", "seed-1") for m in ABLATIONS
             for e in _events(cfg.bench_dir / seed / m) if e["event"] == "budget_spent"]
    assert spent  # the fake bench's budgets are tight enough to get there
    for seed, m, e in spent:
        assert not list((cfg.bench_dir / seed / m / f"stages/{e['stage']:02d}").glob("remedial-*.jsonl"))


def test_remedial_data_enters_the_ladder_at_the_frontier_the_gate_measured(
    bench: tuple[BenchConfig, dict[str, Any]],
) -> None:
    cfg, _ = bench
    checked = 0
    for seed in ("seed-0", "seed-1"):
        run = cfg.bench_dir / seed / "ioa"
        for e in _events(run):
            if e["event"] != "gate" or e["passed"]:
                continue
            remedial = run / f"stages/{e['stage']:02d}/remedial-{e['round'] + 1}.jsonl"
            if not remedial.exists():
                continue
            rows = [json.loads(line) for line in remedial.read_text().splitlines()]
            for m in e["gate"]["failed_modules"]:
                levels = [r["level"] for r in rows if r["module"] == m]
                assert levels and min(levels) == e["frontier"][m], (seed, m, e["frontier"])
                checked += 1
    assert checked  # the fake student fails its gates, so remediation happened


def _ioa_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, student: type[FakeStudent] = FakeStudent,
              **adapter: Any) -> tuple[BenchConfig, dict[str, Any], Path]:
    """A one-seed fake bench of IOA alone with this fake student and adapter settings: config, result, run dir."""
    import bench_fakes

    patch_models(monkeypatch)
    monkeypatch.setattr(bench_fakes, "FakeStudent", student)
    monkeypatch.chdir(tmp_path)
    cfg = _bench_config(Path("."), adapter=adapter, seeds=1, methods=["ioa"])
    result = run_bench(cfg, teacher=FakeTeacher())
    return cfg, result, cfg.bench_dir / "seed-0" / "ioa"


class OvertrainedStudent(FakeStudent):
    """Learns from its first training, then collapses: right on no item once trained on > 20 examples."""

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        if self.skill > 20:
            return [Generation("#### 12", 10, 3) for _ in requests]
        return super().generate(requests)


def test_an_unmastered_stage_keeps_its_best_round_and_remediation_retrains_from_the_stage_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, run = _ioa_only(tmp_path, monkeypatch, OvertrainedStudent, representation="bare")
    events = _events(run)
    curriculum = json.loads((run / "curriculum.json").read_text())
    trained = {e["at"]: e for e in events if e["event"] == "trained"}
    stage_start = curriculum["starts"]["0"]
    # Stage training continues from where the stage started; the remedial round retrains from there too
    # (on remedial + stage data), instead of training the stage's student further.
    assert trained["stages/01/student"]["start"] == stage_start
    assert trained["stages/01/student-r1"]["start"] == stage_start
    assert trained["stages/01/student-r1"]["examples"] > trained["stages/01/student"]["examples"]
    # The remedial student (> 20 examples) collapsed, so its gate was worse: the stage keeps round 0.
    kept = [e for e in events if e["event"] == "kept_best_round"]
    assert kept and kept[0]["round"] == 0 and kept[0]["student"] == "stages/01/student"
    assert curriculum["student"] == "stages/01/student"
    final_skill = json.loads((run / "student" / "skill.json").read_text())["examples"]
    assert final_skill == trained["stages/01/student"]["examples"]


def test_the_spend_counts_the_samples_trained_on_not_the_pilot_sets_calibration_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, result, run = _ioa_only(tmp_path, monkeypatch, calibration="pilot", candidates=["bare", "plain", "steps"])
    # Candidates bare, plain, steps: the pilot asks for the Adapter's and the teacher's plain solutions.
    adapted, plain = run / "calibration/data.accounting.json", run / "calibration/data.plain.accounting.json"
    assert adapted.exists() and plain.exists()
    choices = json.loads((run / "curriculum.json").read_text())["representation"]
    used = json.loads(adapted.read_text())["used_modules"] + json.loads(plain.read_text())["used_modules"]
    assert sorted(used) == sorted(choices)  # every target's pilot samples come from exactly one set
    trained = set()
    for path in [*run.glob("stages/*/data.jsonl"), *run.glob("stages/*/remedial-*.jsonl")]:
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            if sample["lineage"].get("purpose") != "replay":  # replay repeats earlier samples
                trained.add((sample["item_id"], sample["lineage"].get("purpose")))
    cell = next(c for c in result["cells"] if (c["method"], c["seed"]) == ("ioa", 0))
    assert cell["spend"]["samples"] == len(trained)


def test_stage_calibration_trains_each_candidate_once_and_the_gate_decides(
    bench: tuple[BenchConfig, dict[str, Any]],
) -> None:
    cfg, _ = bench
    run = cfg.bench_dir / "seed-0" / "ioa"
    events = _events(run)
    curriculum = json.loads((run / "curriculum.json").read_text())
    assert not (run / "calibration").exists()  # no separate pilot: no teacher call is spent on one
    stage = curriculum["stages"][0]
    trained = {e["at"]: e for e in events if e["event"] == "trained"}
    candidates = [trained[f"stages/01/calibration-{r}"] for r in ("bare", "plain")]
    assert {c["start"] for c in candidates} == {curriculum["starts"]["0"]}  # the same student, the same data
    assert len({c["examples"] for c in candidates}) == 1
    calibrated = next(e for e in events if e["event"] == "calibrated")
    assert calibrated["stage"] == 1 and set(calibrated["choices"]) == set(stage["modules"])
    # The fake student answers the same whatever it was shown, so the two tie and the first candidate wins.
    for m in stage["modules"]:
        choice = curriculum["representation"][m]
        assert choice["choice"] == "bare" and "tie" in choice["why"]
        assert set(choice["gate_accuracy"]) == {"bare", "plain"}
    data = [json.loads(line) for line in (run / "stages/01/data.jsonl").read_text().splitlines()]
    assert data and all(d["representation"] == "bare" and d["completion"].startswith("####") for d in data
                        if d["module"] in stage["modules"])
    # The round-0 gate measured the chosen student on the calibration's gate items.
    gate = next(e for e in events if e["event"] == "gate" and e["stage"] == 1 and e["round"] == 0)
    for m in stage["modules"]:
        correct, n = gate["accuracy"][m]
        assert correct / n == curriculum["representation"][m]["gate_accuracy"]["bare"]


class StepLearner(FakeStudent):
    """Learns only from worked solutions: right on every item once trained on any multi-line completion."""

    @property
    def worked(self) -> bool:
        shown = self.path / "examples.json"
        return shown.exists() and any("\n" in e["completion"] for e in json.loads(shown.read_text()))

    @property
    def fingerprint(self) -> str:  # the call cache keys answers by weights: these differ by what was shown
        return f"step-learner-{self.skill}-{self.worked}"

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        if not self.worked:
            return [Generation("#### 99999", 10, 3) for _ in requests]
        return [Generation(f"#### {solve(r.messages[-1][1], {}) or 0}", 10, 3) for r in requests]


def test_stage_calibration_picks_the_representation_the_student_learns_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, run = _ioa_only(tmp_path, monkeypatch, StepLearner)
    curriculum = json.loads((run / "curriculum.json").read_text())
    for m in curriculum["stages"][0]["modules"]:
        choice = curriculum["representation"][m]
        assert choice["choice"] == "plain" and choice["gate_accuracy"]["bare"] == 0.0
        assert choice["gate_accuracy"]["plain"] > 0.5 and "tie" not in choice["why"]
    data = [json.loads(line) for line in (run / "stages/01/data.jsonl").read_text().splitlines()]
    assert data and all(d["representation"] == "plain" for d in data)
    remedial = [json.loads(line) for p in run.glob("stages/*/remedial-*.jsonl") for line in p.read_text().splitlines()]
    assert all(d["representation"] == "plain" for d in remedial)


def test_a_rerun_skips_finished_cells_and_pays_no_teacher_call(
    bench: tuple[BenchConfig, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, first = bench
    stamps = {p: p.stat().st_mtime_ns for p in cfg.bench_dir.rglob("cell.json")}
    teacher = FakeTeacher()
    again = run_bench(cfg, teacher=teacher)
    assert teacher.calls == 0
    assert {p: p.stat().st_mtime_ns for p in cfg.bench_dir.rglob("cell.json")} == stamps
    assert again["summary"] == first["summary"]
    # A third seed is added by rerunning with more seeds; the first two are reused.
    more = run_bench(cfg.model_copy(update={"seeds": 3}), teacher=teacher)
    assert more["seeds"] == [0, 1, 2] and teacher.calls > 0


def test_finished_cells_keep_only_their_final_student(bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    cfg, result = bench
    for cell in result["cells"]:
        cell_dir = cfg.bench_dir / f"seed-{cell['seed']}" / cell["method"]
        weights = [p.parent for p in cell_dir.rglob("model.safetensors")]
        student = (cfg.bench_dir / cell["student"]).resolve()
        assert all(w.resolve() == student for w in weights), (cell["method"], weights)


def test_a_bench_directory_refuses_another_config(
    bench: tuple[BenchConfig, dict[str, Any]], tmp_path: Path
) -> None:
    cfg, _ = bench
    changed = cfg.model_copy(update={"benchmarks": cfg.benchmarks.model_copy(update={"gsm8k_items": 3})})
    with pytest.raises(ConfigError, match="another bench config"):
        run_bench(changed, teacher=FakeTeacher())
    # What only changes the report is allowed: the shortfall rule, the bootstrap.
    relaxed = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"on_shortfall": "error"}),
                                     "bootstrap": cfg.bootstrap.model_copy(update={"resamples": 200})})
    assert run_bench(relaxed, teacher=FakeTeacher())["config"]["bootstrap"]["resamples"] == 200


def test_markdown_from_constructed_results() -> None:
    cfg = BenchConfig(seeds=1, methods=["ioa", "standard"])
    cell = {"method": "ioa", "seed": 0, "spend": {"samples": 10, "teacher_tokens": 100, "stopped_by": "plan"},
            "budget": check_budget("ioa", Spend(10, 100), Spend(10, 100), reference=True).to_dict(),
            "seconds": 60.0, "student": "s", "results": {"x": {"accuracy": 1.0, "correct": [1, 1],
                                                               "modules": {"m": [2, 2]}}}}
    other = {**cell, "method": "standard", "spend": {"samples": 10, "teacher_tokens": 50, "stopped_by": "samples"},
             "budget": check_budget("standard", Spend(10, 50, "samples"), Spend(10, 100)).to_dict(),
             "results": {"x": {"accuracy": 0.0, "correct": [0, 0], "modules": {"m": [0, 2]}}}}
    from ioa.bench import Benchmark, summarise

    bm = Benchmark("x", ArithmeticDomain(), [Item("a", "m", "p", "1"), Item("b", "m", "q", "2")], 8, 8)
    ref = {"x": {"accuracy": 1.0, "correct": [1, 1], "modules": {"m": [2, 2]}}}
    result = summarise(cfg, [bm], ref, ref, [cell, other])
    assert result["summary"]["ioa"]["benchmarks"]["x"] == {"mean": 1.0, "std": None, "per_seed": [1.0],
                                                           "retention": 1.0}
    assert result["summary"]["standard"]["forgetting"] == 1.0  # m was mastered (2/2) and fell to 0/2
    assert result["summary"]["standard"]["budget_status"] == ["cheaper"]
    assert result["significance"]["standard"]["x"]["p_value"] == 0.0
    md = markdown(result)
    assert "| standard distillation | 0.0 |" in md and "< 1e-04" in md and "cheaper" in md and "×0.50" in md


# ----------------------------------------------------------------------------------------------- the CLI


def test_bench_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_bench_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"methods": ["ioa", "magic"]}))
    with pytest.raises(ConfigError, match="methods"):
        load_bench_config(bad)
    bad.write_text(yaml.safe_dump({"run": {"organizer": {"staged": "sometimes"}}}))
    with pytest.raises(ConfigError, match=r"run\.organizer\.staged"):
        load_bench_config(bad)


def test_the_preset_loads() -> None:
    from ioa.cli import preset

    cfg = load_bench_config(preset("bench_small"))
    assert cfg.seeds == 3 and set(cfg.methods) == set(BENCH_METHODS)
    assert len(cfg.run.domain.modules) == 2


def test_ioa_bench_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ioa.bench
    from ioa.cli import app
    from ioa.models.cache import CachedModel

    patch_models(monkeypatch)
    monkeypatch.setattr(ioa.bench, "open_teacher", lambda config, run, cache: CachedModel(FakeTeacher(), cache))
    cfg = _bench_config(tmp_path, seeds=3)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    runner = CliRunner()
    out = tmp_path / "elsewhere" / "b1"
    args = ["bench", str(path), "--out", str(out), "--seeds", "1", "--methods", "undistilled,standard"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bench.json").read_text())
    assert saved["methods"] == ["ioa", "undistilled", "standard"] and saved["seeds"] == [0]
    assert "bench.json" in result.output and "standard distillation" in result.output
    # Another method later: the bench then reports every finished cell.
    result = runner.invoke(app, [*args[:-1], "llm2llm"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bench.json").read_text())
    assert saved["methods"] == ["ioa", "undistilled", "standard", "llm2llm"]

    result = runner.invoke(app, ["bench", str(path), "--methods", "ioa,nonsense"])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ real models


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ioa_bench_end_to_end_with_real_models(tmp_path: Path) -> None:
    """`ioa bench` on the embedded 0.5B teacher and SmolLM2: 1 seed, IOA + undistilled + standard distillation,
    tiny numbers everywhere (a few minutes on 2 cores)."""
    import subprocess
    import sys

    from ioa.models.registry import embedded, installed_path

    for name in ("qwen2.5-coder-0.5b", "smollm2-135m"):
        if installed_path(embedded(name)) is None:
            pytest.skip(f"{name} is not installed (ioa models install {name})")
    gsm8k = Path("../shared/data/gsm8k").resolve()
    config = {
        "name": "tiny", "benches_dir": str(tmp_path), "seeds": 1, "methods": ["ioa", "undistilled", "standard"],
        "run": {
            "teacher": {"spec": "qwen2.5-coder-0.5b", "max_tokens": 96},
            "student": {"spec": "smollm2-135m", "max_tokens": 48},
            "domain": {"name": "arithmetic", "modules": ["single_digit_add", "multi_digit_add"]},
            "identifier": {"probes_per_module": 4},
            "organizer": {"gate_items_per_module": 6, "gate_mode": "point", "max_remediation_rounds": 0},
            "adapter": {"representation": "bare", "samples_per_module": 6},
            "training": {"epochs": 1},
            "evaluation": {"student_max_tokens": 32},
        },
        "benchmarks": {"domain_items_per_module": 4, "gsm8k": gsm8k.is_dir(), "gsm8k_items": 3,
                       "gsm8k_path": str(gsm8k), "gsm8k_max_tokens": 48, "teacher_gsm8k_max_tokens": 128},
        "budget": {"on_shortfall": "record"},
        "bootstrap": {"resamples": 1000},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "ioa.cli", "bench", str(path)], capture_output=True, text=True,
                          timeout=3500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "tiny" / "bench.json").read_text())
    benchmarks = {"arithmetic", "gsm8k"} if gsm8k.is_dir() else {"arithmetic"}
    assert set(result["benchmarks"]) == benchmarks
    cells = {(c["method"], c["seed"]): c for c in result["cells"]}
    assert set(cells) == {("ioa", 0), ("undistilled", 0), ("standard", 0)}
    for cell in cells.values():
        assert set(cell["results"]) == benchmarks
        for name in benchmarks:
            assert len(cell["results"][name]["correct"]) == len(result["benchmarks"][name]["items"])
    assert cells[("ioa", 0)]["spend"]["samples"] > 0
    assert cells[("standard", 0)]["spend"]["teacher_tokens"] <= 1.05 * cells[("ioa", 0)]["spend"]["teacher_tokens"]
    assert set(result["significance"]) == {"undistilled", "standard"}
    assert (tmp_path / "tiny" / "bench.md").exists()


def test_review_draws_earlier_data_from_every_level_not_the_first_rows(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ioa.adapter import Sample
    from ioa.run import Curriculum, _replay_samples
    from ioa.rundir import RunDir, write_jsonl

    run = RunDir(tmp_path / "run")
    # Stage data is written level by level (the ladder, easiest first): 10 samples per level.
    rows = [Sample(item_id=f"s-{lv}-{i}", module="single_digit_add", level=lv, prompt=[], completion="#### 1",
                   representation="bare", final_answer="1", steps=[], lineage={"purpose": "stage"})
            for lv in range(1, 6) for i in range(10)]
    write_jsonl(run / "stages/01/data.jsonl", rows)
    curriculum = Curriculum(stages=[], pending_replay={"single_digit_add": 12})
    loop = SimpleNamespace(run=run, curriculum=curriculum, config=RunConfig())
    review = _replay_samples(loop)  # type: ignore[arg-type]
    assert len(review) == 12 and len({s.item_id for s in review}) == 12
    assert len({s.level for s in review}) >= 4  # a prefix would have held levels 1-2 only
    assert all(s.lineage["purpose"] == "replay" for s in review)
    assert [s.item_id for s in review] == [s.item_id for s in _replay_samples(loop)]  # the same on a rerun


def test_ioa_plan_shows_the_stage_calibration(bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    from ioa.cli import app

    cfg, _ = bench
    result = CliRunner().invoke(app, ["plan", str(cfg.bench_dir / "seed-0" / "ioa")])
    assert result.exit_code == 0, result.output
    assert re.search(r"representation bare \(calibration: bare \d+%, plain \d+% \(stage gate, n=8\)\)",
                     " ".join(result.output.split()))

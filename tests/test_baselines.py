"""The baselines of `ioa bench` on a scripted teacher: seed data, verification, budget stops, LLM2LLM rounds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench_fakes import FakeTeacher
from ioa.adapter import Sample
from ioa.baselines import (
    Context,
    check_supported,
    llm2llm,
    pool_size,
    seed_pool,
    self_instruct,
    standard_distillation,
)
from ioa.config import BaselinesConfig, RunConfig
from ioa.dedup import Decontaminator
from ioa.domains import ArithmeticDomain
from ioa.domains.base import Item
from ioa.errors import ConfigError
from ioa.models.base import ChatRequest, Generation

MODULES = ["single_digit_add", "multi_digit_add"]


def context(method: str, teacher: object, max_samples: int = 12, max_tokens: int = 100_000,
            protected: Sequence[str] = (), **options: object) -> Context:
    domain = ArithmeticDomain()
    config = RunConfig(domain={"name": "arithmetic", "modules": MODULES}, teacher={"spec": "fake", "max_tokens": 64})
    modules = {m.id: m for m in domain.modules() if m.id in MODULES}
    return Context(method, config, domain, modules, teacher, Decontaminator(protected, 8),  # type: ignore[arg-type]
                   max_samples, max_tokens, BaselinesConfig(**options))  # type: ignore[arg-type]


def test_seed_pool_is_the_train_split_spread_evenly_over_modules() -> None:
    pool = seed_pool(ArithmeticDomain(), MODULES, 5, seed=3)
    assert [i.module for i in pool[:4]] == MODULES * 2
    assert sum(i.module == "multi_digit_add" for i in pool) == 5
    assert all(i.meta["split"] == "train" for i in pool)
    assert pool == seed_pool(ArithmeticDomain(), MODULES, 5, seed=3)
    assert pool != seed_pool(ArithmeticDomain(), MODULES, 5, seed=4)


def test_a_prefix_of_the_seed_pool_covers_every_level() -> None:
    # A baseline stops at N samples, so the pool's order decides what it trains on: a level-sorted pool
    # (as the domain returns items) would give standard distillation only the easiest levels.
    pool = seed_pool(ArithmeticDomain(), MODULES, 40, seed=0)
    first = [i for i in pool[:24] if i.module == "multi_digit_add"]
    assert len(first) == 12
    assert len({i.level for i in first}) >= 4
    assert sorted(i.level for i in pool) == sorted(i.level for i in seed_pool(ArithmeticDomain(), MODULES, 40, 0))


def test_standard_distillation_keeps_verified_teacher_replies_verbatim() -> None:
    teacher = FakeTeacher(wrong_every=3)
    data = standard_distillation(context("standard", teacher, max_samples=12))
    assert len(data.samples) == 12 and data.stopped_by == "samples"
    assert data.drops["wrong_answer"] > 0  # the teacher's wrong answers were checked and dropped
    assert data.generated == 12 + data.drops["wrong_answer"] + data.drops["truncated"]
    for s in data.samples:
        assert s.completion.startswith("Step by step.") and s.representation == "raw"
        assert s.completion.endswith(f"#### {s.final_answer}")
        assert s.lineage["method"] == "standard" and s.lineage["verification"] == "domain_checker"
    assert {s.module for s in data.samples} == set(MODULES)


def test_a_baseline_stops_where_the_token_budget_ends() -> None:
    teacher = FakeTeacher(wrong_every=0)
    data = standard_distillation(context("standard", teacher, max_samples=500, max_tokens=1500))
    assert data.stopped_by == "tokens"
    assert 0 < data.teacher_tokens <= 1500
    assert 0 < len(data.samples) < 500


def test_seed_items_that_match_a_benchmark_item_are_never_sent() -> None:
    pool = seed_pool(ArithmeticDomain(), MODULES, pool_size(10, len(MODULES)), seed=0)  # the pool it draws
    protected = [i.prompt for i in pool[:6]]
    data = standard_distillation(context("standard", FakeTeacher(), max_samples=10, protected=protected))
    assert data.drops["contaminated"] >= 6
    assert not {s.prompt[-1]["content"] for s in data.samples} & set(protected)


def test_self_instruct_keeps_problems_whose_independent_solve_agrees() -> None:
    teacher = FakeTeacher(wrong_every=4)  # wrong on a quarter of problems: its two answers then disagree
    data = self_instruct(context("self_instruct", teacher, max_samples=10))
    assert len(data.samples) == 10
    assert data.drops["disagreement"] > 0
    seeds = {i.prompt for i in seed_pool(ArithmeticDomain(), MODULES, 38, 0)}
    for s in data.samples:
        problem = s.prompt[-1]["content"]
        assert problem not in seeds  # a new problem, written by the teacher
        # Kept because the independent solve agrees (a teacher wrong the same way twice would still pass:
        # agreement is all DESIGN §4 can ask of a problem without a reference answer).
        assert teacher._answer(problem) == s.final_answer
        assert s.completion.endswith(f"#### {s.final_answer}") and s.lineage["verification"] == "independent_solve"
    # Two calls per sample (write, solve) besides the dropped ones.
    assert data.generated >= 2 * len(data.samples)


class EchoTeacher(FakeTeacher):
    """Writes the same problem every time: all but the first are near-duplicates."""

    def _reply(self, request: ChatRequest) -> str:
        if "practice problems" in request.messages[0][1]:
            return json.dumps({"problem": "What is 41 + 41?", "steps": ["41 + 41 = 82."], "final_answer": "82"})
        return super()._reply(request)


def test_self_instruct_drops_repeated_problems() -> None:
    data = self_instruct(context("self_instruct", EchoTeacher(wrong_every=0), max_samples=5))
    assert len(data.samples) == 1
    assert data.drops["near_duplicate"] > 0
    assert data.stopped_by == "plan"  # gave up after its request limit: the bench reports it as under-used


class RecordingTeacher(FakeTeacher):
    def __init__(self) -> None:
        super().__init__(wrong_every=0)
        self.llm2llm_sources: list[str] = []

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        for r in requests:
            if "answered the problem below wrongly" in r.messages[0][1]:
                self.llm2llm_sources.append(r.messages[-1][1])
        return super().generate(requests)


def test_llm2llm_writes_problems_like_the_ones_the_student_got_wrong(tmp_path: Path) -> None:
    teacher = RecordingTeacher()
    trained: list[int] = []
    wrong: set[str] = set()

    def trainer(samples: Sequence[Sample], out: Path) -> str:
        trained.append(len(samples))
        return str(out)

    def examiner(student: str, items: Sequence[Item]) -> list[bool]:
        # The student fails every third seed problem.
        ok = [i % 3 != 0 for i in range(len(items))]
        wrong.update(item.prompt for item, good in zip(items, ok, strict=True) if not good)
        return ok

    ctx = context("llm2llm", teacher, max_samples=20, llm2llm_rounds=2, llm2llm_seed_fraction=0.5)
    data, student = llm2llm(ctx, tmp_path, trainer, examiner)
    assert len(data.samples) == 20
    assert trained == sorted(trained) and len(trained) == 3 and trained[0] == 10 and trained[-1] == 20
    assert student == str(tmp_path / "round-2")
    shown = {src.split("\n")[0].removeprefix("Problem: ") for src in teacher.llm2llm_sources}
    assert shown and shown <= wrong  # only failed seed problems were shown to the teacher


def test_problem_writing_baselines_refuse_the_code_domain() -> None:
    class Code:
        name = "code"

    for method in ("self_instruct", "llm2llm"):
        with pytest.raises(ConfigError, match=method):
            check_supported(method, Code())  # type: ignore[arg-type]
    check_supported("standard", Code())  # type: ignore[arg-type]

"""The baselines of `ioa bench` (DESIGN §6), each a trained student from the same teacher, student, seed data
and budget as IOA.

- undistilled: the student as it is (no data, no teacher tokens).
- standard distillation: the teacher answers seed prompts (the domain's own question prompt, greedy); the
  answers the domain's checker accepts are the data, the teacher's reply verbatim; one training.
- Self-Instruct-style: the teacher writes new problems from a few random seed problems of a module, with a
  worked solution; one training.
- LLM2LLM-style: a seed share of the data as in standard distillation, train, find the seed problems the
  student gets wrong, have the teacher write new problems like each of them, add them, retrain from the
  base student; `llm2llm_rounds` times.

Seed data: the `train` split of the selected modules, drawn with the run's seed and spread evenly over the
modules (the same pool for every baseline of a seed). A problem the teacher writes has no reference answer,
so it is verified as DESIGN §4 says for new problems: the teacher solves it again independently (greedy, the
domain's question prompt) and the two answers must agree under the domain's checker. Every baseline drops
near-duplicates and decontaminates against the probes and the bench's benchmark items, and stops at N
verified samples or at the token budget T (see ioa.matching), whichever comes first.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ioa.adapter import (
    SCHEMA_TEXT,
    TEACHER_CHUNK,
    InvalidReply,
    Sample,
    parse_solution,
    prompt_hash,
    render,
)
from ioa.config import BaselinesConfig, RunConfig
from ioa.dedup import Decontaminator, near_duplicates, rouge_l, tokens
from ioa.domains.base import Domain, Item, Module
from ioa.errors import ConfigError
from ioa.matching import Spend, StopReason, TokenBudget, generate_within
from ioa.models.base import ChatModel, ChatRequest, Generation, Message, SamplingParams
from ioa.teaching import derived_seed

log = logging.getLogger(__name__)

BASELINES = ("undistilled", "standard", "self_instruct", "llm2llm")
# Teacher-written problems need an answer the domain's checker can compare; code problems would need tests.
WRITES_PROBLEMS = ("self_instruct", "llm2llm")


@dataclass
class MethodData:
    """A baseline's verified training samples and what producing them cost."""

    samples: list[Sample] = field(default_factory=list)
    teacher_tokens: int = 0
    generated: int = 0  # teacher calls answered
    drops: Counter[str] = field(default_factory=Counter)
    stopped_by: StopReason = "plan"

    @property
    def spend(self) -> Spend:
        return Spend(len(self.samples), self.teacher_tokens, self.stopped_by)

    def accounting(self) -> dict[str, Any]:
        per_module = Counter(s.module for s in self.samples)
        return {"generated": self.generated, "kept": len(self.samples), "drops": dict(self.drops),
                "teacher_tokens": self.teacher_tokens, "stopped_by": self.stopped_by, "modules": dict(per_module)}


@dataclass
class Context:
    """What every baseline of one seed shares."""

    method: str
    config: RunConfig
    domain: Domain
    modules: Mapping[str, Module]
    teacher: ChatModel
    decontaminator: Decontaminator
    max_samples: int
    max_tokens: int
    options: BaselinesConfig
    budget: TokenBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = TokenBudget(self.max_tokens)

    def lineage(self, module: str, level: int, messages: Sequence[Message], verification: str) -> dict[str, object]:
        return {"run": self.config.name, "method": self.method, "module": module, "difficulty": level,
                "teacher": self.teacher.name, "prompt_hash": prompt_hash(messages), "verification": verification}


def check_supported(method: str, domain: Domain) -> None:
    if method in WRITES_PROBLEMS and domain.name == "code":
        raise ConfigError(
            f"the {method} baseline verifies teacher-written problems by their final answer, which the "
            f"{domain.name} domain cannot check (its problems need tests)",
            f"drop {method} from the bench's methods for this domain",
        )


# ------------------------------------------------------------------------------------------ seed data


def seed_pool(domain: Domain, modules: Sequence[str], per_module: int, seed: int) -> list[Item]:
    """The seed data: `train`-split items of the modules, interleaved module by module (uniform allocation),
    each module's items in a seeded random order. A domain returns items grouped by level, so without the
    shuffle a baseline that stops at N would train on the easiest levels only."""
    lists = []
    for m in modules:
        items = domain.items(m, per_module, derived_seed(seed, "seed-data", m), split="train")
        random.Random(derived_seed(seed, "seed-order", m)).shuffle(items)
        lists.append(items)
    pool: list[Item] = []
    for row in range(max((len(x) for x in lists), default=0)):
        pool += [x[row] for x in lists if row < len(x)]
    return pool


def pool_size(max_samples: int, modules: int) -> int:
    """Seed items drawn per module: enough for the budget at a low verification rate."""
    return 3 * math.ceil(max_samples / max(1, modules)) + 8


# ------------------------------------------------------------------------------- standard distillation


def answer_seeds(ctx: Context, pool: Sequence[Item], want: int, data: MethodData) -> list[Item]:
    """The teacher answers seed prompts in order until `want` more verified samples (or the budget ends);
    a reply the checker accepts becomes a sample verbatim. Returns the items whose samples were kept."""
    params = SamplingParams(max_tokens=ctx.config.teacher.max_tokens)
    target = len(data.samples) + want
    kept_items: list[Item] = []
    todo, start = _clean(ctx, pool, data), 0
    while len(data.samples) < target and start < len(todo) and not ctx.budget.exhausted:
        chunk = todo[start : start + min(TEACHER_CHUNK, target - len(data.samples))]
        messages = [ctx.domain.messages(item) for item in chunk]
        replies = generate_within(ctx.teacher, [ChatRequest.of(m, params) for m in messages], ctx.budget)
        start += len(replies)  # the budget may cut a chunk short: the rest is asked next time (or never)
        for item, msgs, reply in zip(chunk, messages, replies, strict=False):
            _count(data, reply)
            if reply.finish_reason == "length":
                data.drops["truncated"] += 1
            elif not ctx.domain.check(item, reply.text):
                data.drops["wrong_answer"] += 1
            else:
                kept_items.append(item)
                data.samples.append(Sample(
                    item_id=item.id, module=item.module, level=item.level, prompt=ctx.domain.messages(item),
                    completion=reply.text.strip(), representation="raw", final_answer=item.answer, steps=[],
                    lineage=ctx.lineage(item.module, item.level, msgs, "domain_checker"),
                ))
    return kept_items


def _clean(ctx: Context, pool: Sequence[Item], data: MethodData) -> list[Item]:
    """Seed items without near-duplicates and contamination (checked before any teacher call is paid)."""
    dup = set(near_duplicates([i.prompt for i in pool], ctx.config.adapter.dedup_threshold))
    data.drops["near_duplicate"] += len(dup)
    out = []
    for idx, item in enumerate(pool):
        if idx in dup:
            continue
        if ctx.decontaminator.contaminated(item.prompt):
            data.drops["contaminated"] += 1
            continue
        out.append(item)
    return out


def _count(data: MethodData, reply: Generation) -> None:
    data.generated += 1
    data.teacher_tokens += reply.prompt_tokens + reply.completion_tokens


def _stopped(ctx: Context, data: MethodData) -> StopReason:
    if len(data.samples) >= ctx.max_samples:
        return "samples"
    return "tokens" if ctx.budget.exhausted else "plan"


def standard_distillation(ctx: Context) -> MethodData:
    data = MethodData()
    pool = seed_pool(ctx.domain, list(ctx.modules), pool_size(ctx.max_samples, len(ctx.modules)), ctx.config.seed)
    answer_seeds(ctx, pool, ctx.max_samples, data)
    data.stopped_by = _stopped(ctx, data)
    return data


# ------------------------------------------------------------------------ teacher-written problems


SELF_INSTRUCT_TEXT = (
    "You write practice problems for a student learning: {title}. Below are example problems. Write ONE new "
    "problem of the same kind and difficulty, different from every example, then solve it."
)
LLM2LLM_TEXT = (
    "A student answered the problem below wrongly. Write ONE new problem that practises the same skill at the "
    "same difficulty, with different numbers, then solve it."
)


def self_instruct_messages(module: Module, examples: Sequence[Item]) -> list[Message]:
    shown = "\n".join(f"{i}. {item.prompt} (answer: {item.answer})" for i, item in enumerate(examples, start=1))
    return [{"role": "system", "content": SELF_INSTRUCT_TEXT.format(title=module.title) + "\n" + SCHEMA_TEXT},
            {"role": "user", "content": f"Examples:\n{shown}\nWrite the new problem."}]


def llm2llm_messages(failed: Item) -> list[Message]:
    return [{"role": "system", "content": LLM2LLM_TEXT + "\n" + SCHEMA_TEXT},
            {"role": "user", "content": f"Problem: {failed.prompt}\nCorrect answer: {failed.answer}"}]


@dataclass(frozen=True)
class Draft:
    """A teacher-written problem awaiting its independent check."""

    item: Item
    steps: list[str]
    messages: list[Message]


def write_problems(
    ctx: Context,
    sources: Callable[[int], tuple[Module, list[Item], list[Message]]],
    want: int,
    data: MethodData,
    known: list[str],
    label: str,
    max_requests: int,
) -> int:
    """Teacher-written problems until `want` more verified samples, the budget ends or `max_requests` were
    asked. `sources(k)` gives the k-th request: module, the seed items it shows, its messages. Each reply is
    parsed, deduplicated against `known` prompts (seeds and problems so far), decontaminated, then solved again
    independently; the sample is kept when both answers agree. Returns how many were kept."""
    temperature = ctx.options.self_instruct_temperature
    target, asked = len(data.samples) + want, 0
    while len(data.samples) < target and asked < max_requests and not ctx.budget.exhausted:
        n = min(TEACHER_CHUNK, target - len(data.samples), max_requests - asked)
        specs = [sources(asked + j) for j in range(n)]
        # Each request has its own seed, so the same source shown twice still gives two different problems.
        requests = [ChatRequest.of(m, SamplingParams(temperature, ctx.config.adapter.teacher_max_tokens,
                                                     seed=asked + j)) for j, (_, _, m) in enumerate(specs)]
        replies = generate_within(ctx.teacher, requests, ctx.budget)
        asked += len(replies)  # the budget may cut a chunk short: the rest is asked next time (or never)
        drafts: list[Draft] = []
        for (module, shown, messages), reply in zip(specs, replies, strict=False):
            _count(data, reply)
            draft = _draft(ctx, module, shown, messages, reply.text, known, data, label)
            if draft is not None:
                drafts.append(draft)
                known.append(draft.item.prompt)
        if drafts:
            _solve_and_keep(ctx, drafts, data, target)
    return len(data.samples)


def _draft(ctx: Context, module: Module, shown: Sequence[Item], messages: list[Message], text: str,
           known: Sequence[str], data: MethodData, label: str) -> Draft | None:
    try:
        solution = parse_solution(text)
    except InvalidReply as exc:
        data.drops[exc.reason] += 1
        return None
    problem = solution.problem.strip()
    if not problem or not solution.steps or not solution.final_answer.strip():
        data.drops["schema"] += 1
        return None
    toks = tokens(problem)
    if any(rouge_l(toks, tokens(k)) >= ctx.config.adapter.dedup_threshold for k in known):
        data.drops["near_duplicate"] += 1
        return None
    if ctx.decontaminator.contaminated(problem):
        data.drops["contaminated"] += 1
        return None
    digest = hashlib.sha256(problem.encode()).hexdigest()[:12]
    level = shown[0].level if shown else 1
    item = Item(id=f"{module.id}-{label}-{digest}", module=module.id, prompt=problem,
                answer=solution.final_answer.strip(), level=level)
    return Draft(item, list(solution.steps), messages)


def _solve_and_keep(ctx: Context, drafts: Sequence[Draft], data: MethodData, target: int) -> None:
    params = SamplingParams(max_tokens=ctx.config.teacher.max_tokens)
    requests = [ChatRequest.of(ctx.domain.messages(d.item), params) for d in drafts]
    replies = generate_within(ctx.teacher, requests, ctx.budget)
    for draft, reply in zip(drafts, replies, strict=False):
        _count(data, reply)
        if not ctx.domain.check(draft.item, reply.text):
            data.drops["disagreement"] += 1
            continue
        if len(data.samples) >= target:
            data.drops["over_budget"] += 1  # verified, but the sample budget is full
            continue
        item = draft.item
        data.samples.append(Sample(
            item_id=item.id, module=item.module, level=item.level, prompt=ctx.domain.messages(item),
            completion=render(draft.steps, "steps", item.answer), representation="steps",
            final_answer=item.answer, steps=draft.steps,
            lineage=ctx.lineage(item.module, item.level, draft.messages, "independent_solve"),
        ))


def self_instruct(ctx: Context) -> MethodData:
    data = MethodData()
    ids = list(ctx.modules)
    pool = seed_pool(ctx.domain, ids, pool_size(ctx.max_samples, len(ids)), ctx.config.seed)
    by_module = {m: [i for i in pool if i.module == m] for m in ids}
    rng = random.Random(derived_seed(ctx.config.seed, "self-instruct"))
    k = ctx.options.self_instruct_examples
    plan: list[tuple[Module, list[Item], list[Message]]] = []

    def source(j: int) -> tuple[Module, list[Item], list[Message]]:
        while len(plan) <= j:  # drawn in order, so request j is the same on every rerun
            module = ctx.modules[ids[len(plan) % len(ids)]]
            seeds = by_module[module.id]
            shown = rng.sample(seeds, min(k, len(seeds)))
            plan.append((module, shown, self_instruct_messages(module, shown)))
        return plan[j]

    known = [i.prompt for i in pool]
    write_problems(ctx, source, ctx.max_samples, data, known, "si", max_requests=6 * ctx.max_samples + 16)
    data.stopped_by = _stopped(ctx, data)
    return data


# ------------------------------------------------------------------------------------------- LLM2LLM


Trainer = Callable[[Sequence[Sample], Path], str]  # (samples, out dir) -> trained student dir
Examiner = Callable[[str, Sequence[Item]], list[bool]]  # (student dir, items) -> correct per item


def llm2llm(ctx: Context, out: Path, trainer: Trainer, examiner: Examiner) -> tuple[MethodData, str]:
    """Seed data (a share of N) → train → the seed problems the student gets wrong → one new problem like
    each (the last round writes as many per failure as it takes to reach N) → retrain from the base student
    on everything so far; `llm2llm_rounds` rounds. Returns the data and the final student's directory."""
    opts = ctx.options
    data = MethodData()
    ids = list(ctx.modules)
    pool = seed_pool(ctx.domain, ids, pool_size(ctx.max_samples, len(ids)), ctx.config.seed)
    seed_n = max(1, round(opts.llm2llm_seed_fraction * ctx.max_samples))
    seeds = answer_seeds(ctx, pool, seed_n, data)
    student = trainer(list(data.samples), out / "round-0")
    known = [i.prompt for i in pool]
    per_round = math.ceil(max(0, ctx.max_samples - len(data.samples)) / opts.llm2llm_rounds)
    for r in range(1, opts.llm2llm_rounds + 1):
        left = ctx.max_samples - len(data.samples)
        if left <= 0 or ctx.budget.exhausted or not seeds:
            break
        last = r == opts.llm2llm_rounds
        correct = examiner(student, seeds)
        failed = [item for item, ok in zip(seeds, correct, strict=True) if not ok] or list(seeds)
        want = left if last else min(left, per_round, len(failed) * opts.llm2llm_per_failure)

        def source(j: int, failed: list[Item] = failed) -> tuple[Module, list[Item], list[Message]]:
            item = failed[j % len(failed)]
            return ctx.modules[item.module], [item], llm2llm_messages(item)

        before = len(data.samples)
        write_problems(ctx, source, want, data, known, f"l2l{r}", max_requests=6 * want + 8)
        log.info("llm2llm round %d: %d failures, %d new samples", r, len(failed), len(data.samples) - before)
        student = trainer(list(data.samples), out / f"round-{r}")
    data.stopped_by = _stopped(ctx, data)
    return data, student

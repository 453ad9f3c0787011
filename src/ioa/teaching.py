"""Stage data: which items, at which levels, in which representation, the teacher writes for each module.

Glue between the Organizer's plans (counts, levels, easier/harder notches) and the Adapter (teacher
solutions, verification, dedup, decontamination). Deterministic: the same plan asks the same questions,
so a rerun is served from the call cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ioa.adapter import Representation, Sample, SynthesisResult, synthesise_module
from ioa.config import AdapterConfig
from ioa.dedup import Decontaminator
from ioa.domains.base import Domain, Item, Module
from ioa.matching import TokenBudget
from ioa.models.base import ChatModel
from ioa.organizer import next_level


def derived_seed(*parts: object) -> int:
    """A stable seed for one data request (stage, round, purpose), independent of Python's hash salt."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def ladder(start: int, max_level: int, n: int, rungs: int | None = None) -> list[int]:
    """Levels for n samples: from `start` rising one level at a time up to the top (or at most `rungs`
    rungs), easiest most: weights k, k-1, ..., 1 over the k rungs, the remainder to the entry level.

    Every level the final evaluation asks about is reached: measured with a three-rung cap, a student that
    entered at level 1 was never shown levels 4-5 and scored 0/9 there (bench_small, seed 0)."""
    if not 1 <= start <= max_level:
        raise ValueError(f"level {start} is outside the ladder 1..{max_level}")
    if rungs is not None and rungs < 1:
        raise ValueError(f"a ladder needs at least one rung, not {rungs}")
    levels = [start]
    while (rungs is None or len(levels) < rungs) and levels[-1] < max_level:
        levels.append(next_level(levels[-1], max_level))
    weights = list(range(len(levels), 0, -1))  # e.g. 3:2:1: most practice at the entry level
    counts = [n * w // sum(weights) for w in weights]
    counts[0] += n - sum(counts)
    return [lv for lv, c in zip(levels, counts, strict=True) for _ in range(c)]


def items_for(domain: Domain, module: str, levels: Sequence[int], seed: int) -> list[Item]:
    """Fresh training items at the given levels (split "train": never a probe, gate or benchmark item).

    A level whose pool runs dry (e.g. single-digit sums: 100 facts shared by four splits) passes what it
    could not give to the next level up, one level at a time, so a request is not silently cut short."""
    items: list[Item] = []
    owed = 0
    top = max(levels, default=0)
    for level in range(min(levels, default=1), domain.levels + 1):
        want = levels.count(level) + owed
        if want == 0 and level > top:
            break
        got = domain.items(module, want, derived_seed(seed, level), split="train", level=level) if want else []
        items += got
        owed = want - len(got)
    return items


@dataclass(frozen=True)
class DataRequest:
    """What to synthesise for one module."""

    module: str
    count: int
    level: int
    representation: Representation
    easier: int = 0
    rungs: int | None = None  # how far the ladder climbs from `level` (None: to the top level)


def request_items(domain: Domain, req: DataRequest, cfg: AdapterConfig, seed: int) -> list[Item]:
    """The training items of one request: on the difficulty ladder from the request's level, or, without the
    Adapter (no level adaptation), spread evenly over all of the domain's levels."""
    if not cfg.enabled:
        return domain.items(req.module, req.count, seed, split="train")
    return items_for(domain, req.module, ladder(req.level, domain.levels, req.count, req.rungs), seed)


def synthesise(
    teacher: ChatModel,
    domain: Domain,
    modules: Mapping[str, Module],
    requests: Sequence[DataRequest],
    cfg: AdapterConfig,
    decontaminator: Decontaminator,
    seed: int,
    lineage: dict[str, object],
    on_progress: Callable[[int], None] | None = None,
    *,
    budget: TokenBudget | None = None,
    fill_rounds: int = 0,
) -> SynthesisResult:
    """Verified samples for every request. With `fill_rounds`, a request that kept fewer samples than it
    asked for (drops) draws fresh items (new seeds, prompts not tried before) for the shortfall, up to that
    many times; with a token `budget`, synthesis stops where the next call might not fit."""
    total = SynthesisResult(samples=[])
    for req in requests:
        if req.count <= 0 or total.budget_exhausted:
            continue
        items = request_items(domain, req, cfg, derived_seed(seed, req.module))
        tried = {item.prompt for item in items}
        kept = _merge(total, synthesise_module(
            teacher, domain, modules[req.module], items, cfg, req.representation, decontaminator,
            lineage, easier=req.easier, on_progress=on_progress, budget=budget,
        ))
        for fill in range(1, fill_rounds + 1):
            want = req.count - kept
            if want <= 0 or total.budget_exhausted:
                break
            more = request_items(domain, replace(req, count=want), cfg, derived_seed(seed, req.module, "fill", fill))
            more = [item for item in more if item.prompt not in tried]
            tried |= {item.prompt for item in more}
            if more:
                kept += _merge(total, synthesise_module(
                    teacher, domain, modules[req.module], more, cfg, req.representation, decontaminator,
                    {**lineage, "fill": fill}, easier=req.easier, on_progress=on_progress, budget=budget,
                ))
    return total


def _merge(total: SynthesisResult, part: SynthesisResult) -> int:
    total.merge(part)
    return len(part.samples)


def as_examples(samples: Sequence[Sample]) -> list[dict[str, object]]:
    """Training examples (prompt/completion, the student's chat template applied by the trainer)."""
    return [{"prompt": s.prompt, "completion": s.completion} for s in samples]

"""Stage data: which items, at which levels, in which representation, the teacher writes for each module.

Glue between the Organizer's plans (counts, levels, easier/harder notches) and the Adapter (teacher
solutions, verification, dedup, decontamination). Deterministic: the same plan asks the same questions,
so a rerun is served from the call cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ioa.adapter import Representation, Sample, SynthesisResult, synthesise_module
from ioa.config import AdapterConfig
from ioa.dedup import Decontaminator
from ioa.domains.base import Domain, Item, Module
from ioa.models.base import ChatModel
from ioa.organizer import next_level


def derived_seed(*parts: object) -> int:
    """A stable seed for one data request (stage, round, purpose), independent of Python's hash salt."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def ladder(start: int, max_level: int, n: int) -> list[int]:
    """Levels for n samples: from `start` rising one level at a time, at most three rungs, easiest most."""
    if not 1 <= start <= max_level:
        raise ValueError(f"level {start} is outside the ladder 1..{max_level}")
    rungs = [start]
    while len(rungs) < 3 and rungs[-1] < max_level:
        rungs.append(next_level(rungs[-1], max_level))
    weights = list(range(len(rungs), 0, -1))  # e.g. 3:2:1: most practice at the entry level
    counts = [n * w // sum(weights) for w in weights]
    counts[0] += n - sum(counts)
    return [lv for lv, c in zip(rungs, counts, strict=True) for _ in range(c)]


def items_for(domain: Domain, module: str, levels: Sequence[int], seed: int) -> list[Item]:
    """Fresh training items at the given levels (split "train": never a probe, gate or benchmark item)."""
    items: list[Item] = []
    for level in sorted(set(levels)):
        want = levels.count(level)
        items += domain.items(module, want, derived_seed(seed, level), split="train", level=level)
    return items


@dataclass(frozen=True)
class DataRequest:
    """What to synthesise for one module."""

    module: str
    count: int
    level: int
    representation: Representation
    easier: int = 0


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
) -> SynthesisResult:
    total = SynthesisResult(samples=[])
    for req in requests:
        if req.count <= 0:
            continue
        levels = ladder(req.level, domain.levels, req.count)
        items = items_for(domain, req.module, levels, derived_seed(seed, req.module))
        total.merge(
            synthesise_module(
                teacher, domain, modules[req.module], items, cfg, req.representation, decontaminator,
                lineage, easier=req.easier, on_progress=on_progress,
            )
        )
    return total


def as_examples(samples: Sequence[Sample]) -> list[dict[str, object]]:
    """Training examples (prompt/completion, the student's chat template applied by the trainer)."""
    return [{"prompt": s.prompt, "completion": s.completion} for s in samples]

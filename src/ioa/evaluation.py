"""Scoring students and teachers: snapshots, gates, benchmarks, before/after comparison."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ioa.domains.base import Domain, Item, Split
from ioa.models.base import ChatModel, SamplingParams
from ioa.models.cache import CachedModel, CallCache
from ioa.probing import ProbeRow, accuracy_by_module, probe
from ioa.stats import Proportion


def load_student_model(path: Path, cache: CallCache, name: str | None = None) -> CachedModel:
    """A student in Hugging Face format, generating in batches, every call cached by weight fingerprint."""
    from ioa.models.hf import HFModel

    return CachedModel(HFModel(Path(path), name=name or Path(path).name), cache)


def fresh_items(domain: Domain, modules: Sequence[str], n: int, seed: int, split: Split) -> list[Item]:
    return [item for m in modules for item in domain.items(m, n, seed, split=split)]


def score(
    model: ChatModel,
    domain: Domain,
    items: Sequence[Item],
    max_tokens: int,
    role: str = "student",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Proportion], list[ProbeRow]]:
    rows = probe(model, domain, items, SamplingParams(max_tokens=max_tokens), role, on_progress)
    return accuracy_by_module(rows), rows


@dataclass(frozen=True)
class Comparison:
    """Accuracy of one module before and after, with a 95% interval on the difference (Newcombe)."""

    module: str
    before: Proportion
    after: Proportion

    @property
    def delta(self) -> float:
        return self.after.value - self.before.value

    @property
    def delta_interval(self) -> tuple[float, float]:
        return newcombe_interval(self.before, self.after)

    def to_dict(self) -> dict[str, object]:
        lo, hi = self.delta_interval
        return {
            "module": self.module,
            "before": [self.before.correct, self.before.n],
            "after": [self.after.correct, self.after.n],
            "delta": self.delta,
            "delta_interval": [lo, hi],
        }


def newcombe_interval(before: Proportion, after: Proportion) -> tuple[float, float]:
    """95% interval of after − before for independent samples (Newcombe's hybrid Wilson method)."""
    d = after.value - before.value
    l1, u1 = before.interval
    l2, u2 = after.interval
    lo = d - math.sqrt((after.value - l2) ** 2 + (u1 - before.value) ** 2)
    hi = d + math.sqrt((u2 - after.value) ** 2 + (before.value - l1) ** 2)
    return (lo, hi)


def pooled(acc: dict[str, Proportion], modules: Sequence[str]) -> Proportion:
    return Proportion(sum(acc[m].correct for m in modules), sum(acc[m].n for m in modules))

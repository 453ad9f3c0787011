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


def items_from_jsonl(path: Path, question_field: str = "question", answer_field: str = "answer") -> list[Item]:
    """Items from a JSONL of {question, answer}; a GSM8K-style answer keeps only what follows ####."""
    import json

    from ioa.errors import DataError

    if not Path(path).exists():
        raise DataError(f"data file {path} does not exist", "check the --data path")
    items: list[Item] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question, answer = str(row[question_field]), str(row[answer_field])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(
                f"{path}:{lineno} is not a JSON object with {question_field!r} and {answer_field!r}",
                "fix or remove that line",
            ) from None
        answer = answer.split("####")[-1].strip()
        items.append(Item(id=f"{Path(path).stem}-{lineno}", module="data", prompt=question, answer=answer))
    if not items:
        raise DataError(f"{path} holds no items", "give at least one {question, answer} line")
    return items

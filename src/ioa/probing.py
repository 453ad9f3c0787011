"""Run a model on probe items and score every response with the domain's checker (DESIGN §2.2)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ioa.domains.base import Domain, Item
from ioa.models.base import ChatModel, ChatRequest, SamplingParams
from ioa.stats import Proportion

CHUNK = 32  # requests per generate() call: large enough to fill a batch, small enough for a live progress bar


@dataclass(frozen=True)
class ProbeRow:
    """One (item, model, response, correct) observation; every row is kept in the run directory."""

    item_id: str
    module: str
    level: int
    role: str
    model: str
    response: str
    correct: bool
    prompt_tokens: int
    completion_tokens: int
    cached: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def probe(
    model: ChatModel,
    domain: Domain,
    items: Sequence[Item],
    params: SamplingParams,
    role: str,
    on_progress: Callable[[int], None] | None = None,
) -> list[ProbeRow]:
    """Ask `model` every item (greedy by default) and check each answer."""
    rows: list[ProbeRow] = []
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        requests = [ChatRequest.of(domain.messages(item), params) for item in chunk]
        for item, gen in zip(chunk, model.generate(requests), strict=True):
            rows.append(
                ProbeRow(
                    item_id=item.id,
                    module=item.module,
                    level=item.level,
                    role=role,
                    model=model.name,
                    response=gen.text,
                    correct=domain.check(item, gen.text),
                    prompt_tokens=gen.prompt_tokens,
                    completion_tokens=gen.completion_tokens,
                    cached=gen.cached,
                )
            )
        if on_progress:
            on_progress(len(chunk))
    return rows


def accuracy_by_module(rows: Sequence[ProbeRow]) -> dict[str, Proportion]:
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for row in rows:
        total[row.module] += 1
        correct[row.module] += row.correct
    return {m: Proportion(correct[m], total[m]) for m in sorted(total)}


def accuracy_by_level(rows: Sequence[ProbeRow], module: str) -> dict[int, Proportion]:
    correct: dict[int, int] = defaultdict(int)
    total: dict[int, int] = defaultdict(int)
    for row in rows:
        if row.module == module:
            total[row.level] += 1
            correct[row.level] += row.correct
    return {lv: Proportion(correct[lv], total[lv]) for lv in sorted(total)}

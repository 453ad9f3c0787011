"""GSM8K grade-school word problems from JSONL files (DESIGN §8): seed data from train, benchmark from test.

Modules come from a built-in keyword tagging of the question (each item gets exactly one, most specific
first); the level is the number of reasoning steps of the reference solution, mapped to 1..5.
probe / gate / train are disjoint parts of train.jsonl (a fixed hash partition of the question text, so no
seed can make them overlap); benchmark is test.jsonl.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ioa.domains.answers import SOLVE_SYSTEM_PROMPT, check_response
from ioa.domains.arithmetic import spread_over_levels
from ioa.domains.base import Item, Module, Split, check_item_request, jsonl_objects
from ioa.errors import DataError, DomainError
from ioa.models.base import Message

DEFAULT_DATA_PATH = Path("../shared/data/gsm8k")  # relative to the working directory, as in DESIGN §8
LEVELS = 5
# Shares of train.jsonl for the three training-side splits: enough gate items per module (≥ 50, DESIGN §3)
# while most of the data stays available as synthesis seeds.
SPLIT_SHARES: tuple[tuple[Split, float], ...] = (("probe", 0.15), ("gate", 0.15), ("train", 0.70))

MODULES: tuple[Module, ...] = (
    Module("multi_step_arithmetic", "Multi-step whole-number arithmetic",
           "chains of +, -, ×, ÷ on counts of things", 1, ()),
    Module("money", "Money", "prices, costs, earnings and change", 2, ("multi_step_arithmetic",)),
    Module("measurement_geometry", "Measurement and geometry",
           "lengths, areas, perimeters, weights and volumes with units", 2, ("multi_step_arithmetic",)),
    Module("fractions_ratios", "Fractions, ratios and multiples",
           "half, a third, twice as many, ratios", 2, ("multi_step_arithmetic",)),
    Module("time_rates", "Time, rates and speed", "per hour, per day, speed, rates of work", 3,
           ("multi_step_arithmetic", "fractions_ratios")),
    Module("percentages", "Percentages", "percent of, discounts, increases, interest", 3,
           ("fractions_ratios", "money")),
)  # fmt: skip

# Most specific first: a question about "20% off the $40 price" is a percentage problem, not a money one.
_TAGS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (module, re.compile(pattern))
    for module, pattern in (
        ("percentages", r"%|\bpercent"),
        (
            "fractions_ratios",
            r"\b\d+/\d+\b|\bhalf\b|\bhalves\b|\bthirds?\b|\bquarters?\b|\bfourths?\b|\bfifths?\b|\bratio\b"
            r"|\btwice\b|\bthrice\b|\btimes (?:as|more|less|fewer)\b|\bfraction",
        ),
        (
            "measurement_geometry",
            r"\barea\b|\bperimeter\b|\bsquare\b|\brectang|\bcircle|\btriangle|\bvolume\b|\bfeet\b|\bfoot\b"
            r"|\binch|\bmeters?\b|\bcentimet|\bkilomet|\byards?\b|\bgallons?\b|\bliters?\b|\bpounds?\b"
            r"|\bounces?\b|\bkg\b|\bkilograms?\b|\bgrams?\b|\bwide\b|\btall\b|\bwidth\b|\blength\b",
        ),
        (
            "time_rates",
            r"\bper\b|\bspeed\b|\bmph\b|\brate\b|\bmiles?\b|\ban hour\b|\ba (?:day|week|minute|month|year)\b"
            r"|\b(?:each|every) (?:hour|day|week|minute|month|year)\b|\bhourly\b|\bdaily\b|\bweekly\b",
        ),
        (
            "money",
            r"\$|\bdollars?\b|\bcents?\b|\bprice\b|\bcosts?\b|\bpays?\b|\bpaid\b|\bearns?\b|\bspends?\b"
            r"|\bspent\b|\bsells?\b|\bsold\b|\bbuys?\b|\bbought\b|\bprofit\b|\bmoney\b|\bsalary\b|\bwage",
        ),
    )
)
_DEFAULT_MODULE = "multi_step_arithmetic"
_ANNOTATION = re.compile(r"<<[^>]*>>")


def tag_question(question: str) -> str:
    """The module of a question by keywords (the first matching tag in order of specificity)."""
    text = question.lower()
    return next((module for module, pattern in _TAGS if pattern.search(text)), _DEFAULT_MODULE)


def count_steps(reference: str) -> int:
    """Reasoning steps of a reference solution: its lines before `####`, or its `<<...>>` calculations."""
    reasoning = reference.split("####")[0]
    lines = [line for line in reasoning.splitlines() if line.strip()]
    return max(len(lines), len(_ANNOTATION.findall(reasoning)), 1)


def level_of(steps: int) -> int:
    """≤2 steps → 1, 3 → 2, 4 → 3, 5 → 4, ≥6 → 5 (train.jsonl: 26%, 29%, 22%, 13%, 10%)."""
    return min(max(steps - 1, 1), LEVELS)


def split_of(question: str) -> Split:
    """Which training-side split a train.jsonl question belongs to (fixed; independent of any seed)."""
    digest = hashlib.sha256(" ".join(question.split()).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    for split, share in SPLIT_SHARES:
        if u < share:
            return split
        u -= share
    return SPLIT_SHARES[-1][0]


@dataclass(frozen=True)
class Record:
    question: str
    answer: str
    solution: str
    level: int
    module: str
    source: str
    line: int


def _clean_answer(raw: str) -> str:
    return raw.strip().replace(",", "").rstrip(".")


def load_jsonl(path: Path) -> list[Record]:
    """Parse one GSM8K file; any bad line is a DataError naming the file and line number."""
    records: list[Record] = []
    fix = 'each line must be a JSON object {"question": ..., "answer": "...#### <number>"}'
    for number, where, row in jsonl_objects(path, fix):
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where} has no text in 'question'", fix)
        if not isinstance(answer, str) or "####" not in answer:
            raise DataError(f"{where} has no final '#### <answer>' in 'answer'", fix)
        final = _clean_answer(answer.rsplit("####", 1)[1])
        if not final:
            raise DataError(f"{where} has an empty final answer after '####'", fix)
        reasoning = _ANNOTATION.sub("", answer.rsplit("####", 1)[0]).strip()
        records.append(
            Record(
                question=question.strip(),
                answer=final,
                solution=f"{reasoning}\n#### {final}" if reasoning else f"#### {final}",
                level=level_of(count_steps(answer)),
                module=tag_question(question),
                source=path.name,
                line=number,
            )
        )
    return records


def resolve_data_path(data_path: Path | None) -> Path:
    """The GSM8K folder: the configured `data_path`, else ../shared/data/gsm8k from the working directory."""
    path = Path(data_path) if data_path is not None else DEFAULT_DATA_PATH
    if not path.is_dir():
        raise DomainError(
            f"GSM8K data folder {path} does not exist",
            "set domain.data_path to a folder holding GSM8K's train.jsonl and test.jsonl",
        )
    for name in ("train.jsonl", "test.jsonl"):
        if not (path / name).is_file():
            raise DomainError(f"GSM8K file {path / name} is missing", f"put train.jsonl and test.jsonl in {path}")
    return path


class GSM8KDomain:
    """GSM8K as a domain: keyword-tagged modules, step-count levels, fixed disjoint splits."""

    name = "gsm8k"
    levels = LEVELS

    def __init__(self, data_path: Path | None = None) -> None:
        self.data_path = resolve_data_path(data_path)
        self._pools: dict[Split, list[Record]] | None = None

    def modules(self) -> list[Module]:
        return list(MODULES)

    @property
    def pools(self) -> dict[Split, list[Record]]:
        """All records by split (files parsed once, on first use)."""
        if self._pools is None:
            test = load_jsonl(self.data_path / "test.jsonl")
            # A train question that is also in test would leak the benchmark into probes or seeds.
            test_questions = {" ".join(r.question.split()) for r in test}
            pools: dict[Split, list[Record]] = {"probe": [], "gate": [], "train": [], "benchmark": test}
            for record in load_jsonl(self.data_path / "train.jsonl"):
                if " ".join(record.question.split()) not in test_questions:
                    pools[split_of(record.question)].append(record)
            self._pools = pools
        return self._pools

    def items(self, module: str, n: int, seed: int, split: Split = "probe", level: int | None = None) -> list[Item]:
        check_item_request("gsm8k", module, [m.id for m in MODULES], n, split, level, LEVELS)
        pool = [r for r in self.pools[split] if r.module == module]
        streams: dict[int, Iterator[Item]] = {}
        for lv in [level] if level else range(1, LEVELS + 1):
            chosen = [r for r in pool if r.level == lv]
            random.Random(f"ioa-gsm8k|{module}|{lv}|{split}|{seed}").shuffle(chosen)
            streams[lv] = (self._item(r, split) for r in chosen)
        return spread_over_levels(streams, n)

    @staticmethod
    def _item(record: Record, split: Split) -> Item:
        stem = record.source.removesuffix(".jsonl")
        return Item(
            id=f"gsm8k-{stem}-{record.line}",
            module=record.module,
            prompt=record.question,
            answer=record.answer,
            level=record.level,
            solution=record.solution,
            meta={"source": record.source, "line": str(record.line), "split": split},
        )

    def messages(self, item: Item) -> list[Message]:
        return [{"role": "system", "content": SOLVE_SYSTEM_PROMPT}, {"role": "user", "content": item.prompt}]

    def check(self, item: Item, response: str) -> bool:
        return check_response(response, item.answer)

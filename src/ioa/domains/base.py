"""What is taught: modules, items and a checker (DESIGN §1). Domains are plain data plus a protocol."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ioa.errors import DataError, DomainError
from ioa.models.base import Message

Split = Literal["probe", "gate", "train", "benchmark"]
SPLITS: tuple[str, ...] = ("probe", "gate", "train", "benchmark")


def check_item_request(domain: str, module: str, known: list[str], n: int, split: str, level: int | None,
                       levels: int) -> None:
    """The argument checks every `Domain.items` shares, each failure one DomainError with its fix."""
    if module not in known:
        raise DomainError(f"unknown {domain} module {module!r}", f"use one of: {', '.join(known)}")
    if split not in SPLITS:
        raise DomainError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    if level is not None and not 1 <= level <= levels:
        raise DomainError(f"level {level} is out of range", f"use a level from 1 to {levels}")
    if n < 0:
        raise DomainError(f"cannot ask for {n} items", "ask for zero or more")


def jsonl_objects(path: Path, fix: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "FILE line N", row) for each non-blank line of a .jsonl or .jsonl.gz file; a line that
    is not a JSON object is a DataError naming the file and line, with `fix`."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} is not valid JSON ({exc.msg})", fix) from None
            if not isinstance(row, dict):
                raise DataError(f"{where} is not a JSON object", fix)
            yield number, where, row


@dataclass(frozen=True)
class Module:
    """A unit of knowledge. `prerequisites` are the domain's declared edges (module ids)."""

    id: str
    title: str
    description: str = ""
    tier: int = 1
    prerequisites: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """One question with its reference. `level` is the difficulty level 1..L within its module."""

    id: str
    module: str
    prompt: str
    answer: str
    level: int = 1
    solution: str = ""
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@runtime_checkable
class Domain(Protocol):
    name: str
    levels: int

    def modules(self) -> list[Module]:
        """All modules, with declared prerequisites."""
        ...

    def items(self, module: str, n: int, seed: int, split: Split = "probe", level: int | None = None) -> list[Item]:
        """Up to n items of a module. Different splits never share an item; same arguments, same items."""
        ...

    def messages(self, item: Item) -> list[Message]:
        """How an item is asked of a model (probes and evaluation)."""
        ...

    def check(self, item: Item, response: str) -> bool:
        """Whether a model's response answers the item correctly."""
        ...

"""Teacher accounting: tokens and cost per call, per step and per run; a hard budget cap; failure summary.

The ledger is an append-only JSONL file (one line per fresh teacher call, flushed before the reply is
used), so the spend survives a crash or kill -9 and a resumed run starts from what was really spent:
raising the cap and rerunning continues where the cap stopped it. Cached replies cost nothing and are
not in the ledger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ioa.errors import BudgetExceededError
from ioa.models.base import Generation

log = logging.getLogger(__name__)


class _PriceLike(Protocol):
    prompt_per_mtok: float
    completion_per_mtok: float


@dataclass(frozen=True)
class Price:
    """USD per million tokens, prompt and completion priced separately (as providers do)."""

    prompt_per_mtok: float = 0.0
    completion_per_mtok: float = 0.0

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6

    @classmethod
    def of(cls, price: _PriceLike | Price | None) -> Price:
        if price is None:
            return cls()
        return cls(float(price.prompt_per_mtok), float(price.completion_per_mtok))


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int, cost: float, seconds: float = 0.0) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += cost
        self.seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens, "cost_usd": round(self.cost_usd, 8)}


@dataclass(frozen=True)
class Estimate:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


def dry_run_estimate(
    n_calls: int, mean_prompt_tokens: float, mean_completion_tokens: float, price: _PriceLike | Price | None
) -> Estimate:
    """What `n_calls` teacher calls would cost, before sending any (for `--dry-run` and budget planning)."""
    if n_calls < 0 or mean_prompt_tokens < 0 or mean_completion_tokens < 0:
        raise ValueError("n_calls and the mean token counts must be non-negative")
    prompt = round(n_calls * mean_prompt_tokens)
    completion = round(n_calls * mean_completion_tokens)
    return Estimate(n_calls, prompt, completion, Price.of(price).cost(prompt, completion))


@dataclass
class Reservation:
    """Worst-case tokens/cost of a call in flight, held against the cap until the call ends."""

    model: str
    tokens: int
    cost: float
    step: str


class FailureLog:
    """Every failed attempt by reason (http_429, timeout, invalid_json, ...), with a few examples each."""

    def __init__(self, max_examples: int = 3) -> None:
        self.max_examples = max_examples
        self.attempts: Counter[str] = Counter()  # failed attempts (retried or not)
        self.gave_up: Counter[str] = Counter()  # requests that failed for good, by last reason
        self.slow: int = 0  # replies that succeeded but took longer than the slow threshold
        self.examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, reason: str, *, final: bool = False, **example: Any) -> None:
        with self._lock:
            self.attempts[reason] += 1
            if final:
                self.gave_up[reason] += 1
            if len(self.examples[reason]) < self.max_examples:
                self.examples[reason].append({"time": round(time.time(), 3), "final": final, **example})

    def record_slow(self, seconds: float, **example: Any) -> None:
        with self._lock:
            self.slow += 1
            if len(self.examples["slow"]) < self.max_examples:
                self.examples["slow"].append({"seconds": round(seconds, 3), **example})

    @property
    def total(self) -> int:
        return sum(self.attempts.values())

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "failed_attempts": sum(self.attempts.values()),
                "by_reason": dict(sorted(self.attempts.items())),
                "gave_up": dict(sorted(self.gave_up.items())),
                "slow_replies": self.slow,
                "examples": {k: list(v) for k, v in sorted(self.examples.items())},
            }

    def write(self, path: Path) -> None:
        _atomic_write_json(Path(path), self.summary())


class Accountant:
    """Counts teacher usage and enforces the budget cap.

    `prices` maps a model name to its price; the key "*" prices any other model (default: free).
    `max_cost_usd` / `max_total_tokens` are hard caps: a call is only sent if its worst case (estimated
    prompt plus max_tokens) fits next to what is spent and what is in flight, so the cap is not exceeded
    by the calls in flight when it is reached.
    """

    def __init__(
        self,
        prices: Mapping[str, _PriceLike | Price] | None = None,
        *,
        max_cost_usd: float | None = None,
        max_total_tokens: int | None = None,
        ledger_path: Path | None = None,
        failures: FailureLog | None = None,
    ) -> None:
        self.prices = {name: Price.of(p) for name, p in (prices or {}).items()}
        self.max_cost_usd = max_cost_usd
        self.max_total_tokens = max_total_tokens
        self.ledger_path = Path(ledger_path) if ledger_path else None
        self.failures = failures or FailureLog()
        self.run = Usage()
        self.by_step: dict[str, Usage] = defaultdict(Usage)
        self.by_model: dict[str, Usage] = defaultdict(Usage)
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self.exhausted = False  # a call was refused for lack of budget
        self._step = "default"
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        if self.ledger_path is not None:
            self._load()

    @classmethod
    def from_config(cls, config: Any, ledger_path: Path | None = None) -> Accountant:
        """From an `AccountingConfig` (prices, max_cost_usd, max_total_tokens)."""
        return cls(
            config.prices,
            max_cost_usd=config.max_cost_usd,
            max_total_tokens=config.max_total_tokens,
            ledger_path=ledger_path,
        )

    # -- steps ---------------------------------------------------------------------------------------
    @property
    def current_step(self) -> str:
        return self._step

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Attribute the calls made inside the block to step `name` (e.g. "diagnose", "stage-01")."""
        previous, self._step = self._step, name
        try:
            yield
        finally:
            self._step = previous

    # -- prices and caps -------------------------------------------------------------------------------
    def price_for(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        if "*" in self.prices:
            return self.prices["*"]
        if self.prices and model not in self._warned:
            self._warned.add(model)
            log.warning("no price for model %r in the price table: its calls are counted as free", model)
        return Price()

    def _over(self, extra_tokens: int, extra_cost: float) -> str | None:
        tokens = self.run.total_tokens + self._reserved_tokens + extra_tokens
        cost = self.run.cost_usd + self._reserved_cost + extra_cost
        if self.max_total_tokens is not None and tokens > self.max_total_tokens:
            return f"{self.run.total_tokens} of {self.max_total_tokens} tokens spent"
        if self.max_cost_usd is not None and cost > self.max_cost_usd + 1e-12:
            return f"${self.run.cost_usd:.4f} of ${self.max_cost_usd:.4f} spent"
        return None

    def check(self) -> None:
        """Raise BudgetExceededError if the cap is reached: spent, or a call was already refused for it
        (between steps of a run, so a new step does not start on a budget that cannot pay for it)."""
        with self._lock:
            tokens_spent = self.max_total_tokens is not None and self.run.total_tokens >= self.max_total_tokens
            cost_spent = self.max_cost_usd is not None and self.run.cost_usd >= self.max_cost_usd - 1e-12
            if tokens_spent or cost_spent or self.exhausted:
                raise self._error(self._over(0, 0.0) or self._spent_text())

    def reserve(self, model: str, prompt_tokens: int, max_completion_tokens: int) -> Reservation:
        """Hold a call's worst case against the cap before sending it; raises BudgetExceededError if it
        would not fit. Pair with `commit` (success) or `release` (failure)."""
        with self._lock:
            tokens = prompt_tokens + max_completion_tokens
            cost = self.price_for(model).cost(prompt_tokens, max_completion_tokens)
            if (why := self._over(tokens, cost)) is not None:
                self.exhausted = True
                raise self._error(why)
            self._reserved_tokens += tokens
            self._reserved_cost += cost
            return Reservation(model, tokens, cost, self._step)

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost

    def commit(self, reservation: Reservation, generation: Generation, key: str | None = None) -> None:
        self.release(reservation)
        self.record(reservation.model, generation, step=reservation.step, key=key)

    def _spent_text(self) -> str:
        return f"{self.run.total_tokens} tokens and ${self.run.cost_usd:.4f} spent; the next call does not fit"

    def _error(self, why: str) -> BudgetExceededError:
        return BudgetExceededError(
            f"teacher budget cap reached ({why})",
            "completed calls are saved; raise accounting.max_cost_usd / max_total_tokens and rerun to resume",
        )

    # -- recording -------------------------------------------------------------------------------------
    def record(self, model: str, generation: Generation, step: str | None = None, key: str | None = None) -> None:
        """Count one fresh (not cached) call and append it to the ledger before returning."""
        if generation.cached:
            return
        step = step or self._step
        cost = self.price_for(model).cost(generation.prompt_tokens, generation.completion_tokens)
        line = {
            "time": round(time.time(), 3),
            "model": model,
            "step": step,
            "key": key,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "cost_usd": cost,
            "seconds": round(generation.seconds, 4),
            "finish_reason": generation.finish_reason,
        }
        with self._lock:
            self._add(line)
            if self.ledger_path is not None:
                self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
                # Append + flush: a kill -9 right after still leaves the line in the OS (durable enough for
                # crash-resume; fsync per call would only add power-loss safety at a large cost).
                with open(self.ledger_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
                    f.flush()

    def _add(self, line: Mapping[str, Any]) -> None:
        args = (
            int(line["prompt_tokens"]),
            int(line["completion_tokens"]),
            float(line["cost_usd"]),
            float(line.get("seconds", 0.0)),
        )
        self.run.add(*args)
        self.by_step[str(line["step"])].add(*args)
        self.by_model[str(line["model"])].add(*args)

    def _load(self) -> None:
        assert self.ledger_path is not None
        if not self.ledger_path.exists():
            return
        with open(self.ledger_path, encoding="utf-8") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    self._add(json.loads(raw))
                except (ValueError, KeyError, TypeError):
                    # Only a torn last line (crash mid-write) should ever land here.
                    log.warning("%s line %d is unreadable; skipped", self.ledger_path, n)

    # -- reports ---------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "run": self.run.as_dict(),
                "by_step": {k: v.as_dict() for k, v in sorted(self.by_step.items())},
                "by_model": {k: v.as_dict() for k, v in sorted(self.by_model.items())},
                "budget": {"max_cost_usd": self.max_cost_usd, "max_total_tokens": self.max_total_tokens},
            }

    def write_summary(self, path: Path) -> None:
        _atomic_write_json(Path(path), self.summary())

    def write_failure_summary(self, path: Path) -> None:
        self.failures.write(path)


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


__all__ = [
    "Accountant",
    "Estimate",
    "FailureLog",
    "Price",
    "Reservation",
    "Usage",
    "dry_run_estimate",
]

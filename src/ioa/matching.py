"""Compute matching for `ioa bench` (DESIGN §6): what a method spent, what it may spend, and the check.

The budget rule. Per seed, full IOA runs first; its verified training samples N and teacher tokens T set the
budget. T counts every teacher reply the run used, diagnosis probing included, whether the shared call
cache served it or not: a method's spend is what it would cost run alone. Every other method writes data
until it has N verified samples or its next teacher call could take it past T, whichever comes first (a
call is sent only if its worst case still fits, see TokenBudget). The undistilled student
spends nothing and is exempt. With tolerance t (default 5%), `check_budget` then decides:

- tokens > (1+t)·T, or samples > (1+t)·N: overspent → BudgetError, always (a bug in the method);
- samples < (1−t)·N because the next call did not fit in T: token-limited (the method buys fewer verified
  samples per token than IOA);
- samples < (1−t)·N for any other reason (it ran out of seed items, requests or rounds): under-used;
  a shortfall of either kind is a BudgetError, or with `on_shortfall: record` kept and marked;
- samples within t of N: matched; with tokens < (1−t)·T it is reported as cheaper, with its token ratio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ioa.errors import BudgetError
from ioa.models.base import ChatModel, ChatRequest, Generation

StopReason = Literal["samples", "tokens", "plan"]
Status = Literal["reference", "exempt", "matched", "cheaper", "token_limited", "under_used"]


@dataclass(frozen=True)
class Spend:
    """What a method used: verified training samples, teacher tokens, and why it stopped writing data
    ("samples": reached N, "tokens": the next call did not fit in T, "plan": its own plan was done)."""

    samples: int
    teacher_tokens: int
    stopped_by: StopReason = "plan"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spend:
        return cls(int(d["samples"]), int(d["teacher_tokens"]), d.get("stopped_by", "plan"))


# ------------------------------------------------------------------------------------------- spending


@dataclass
class TokenBudget:
    """Teacher tokens a method may still use (None: unlimited).

    A call is sent only if its worst case fits in what is left: its prompt (characters × the highest tokens
    per character seen so far, 0.5 before any reply: tokenisers give digits a token each) plus its completion
    (max_tokens until 8 replies were seen, then twice the longest completion seen, never above max_tokens).
    `exhausted` once a call was held back for lack of tokens: the method stops writing data there.
    """

    left: int | None = None
    exhausted: bool = False
    prompt_rate: float = 0.5
    longest_completion: int = 0
    replies: int = 0

    def worst_case(self, request: ChatRequest) -> int:
        chars = sum(len(content) for _, content in request.messages)
        prompt = math.ceil(1.1 * chars * self.prompt_rate) + 8 * len(request.messages) + 8
        completion = request.params.max_tokens
        if self.replies >= 8:
            completion = min(completion, 2 * self.longest_completion + 8)
        return prompt + completion

    def fitting(self, requests: Sequence[ChatRequest]) -> int:
        """How many of `requests`, in order, fit in what is left even in their worst case (0: exhausted)."""
        if self.left is None:
            return len(requests)
        room, n = self.left, 0
        for request in requests:
            room -= self.worst_case(request)
            if room < 0:
                break
            n += 1
        if n == 0 and requests:
            self.exhausted = True
        return n

    def spend(self, requests: Sequence[ChatRequest], generations: Sequence[Generation]) -> int:
        tokens = 0
        for request, g in zip(requests, generations, strict=False):
            tokens += g.prompt_tokens + g.completion_tokens
            chars = sum(len(content) for _, content in request.messages)
            if chars:
                self.prompt_rate = max(self.prompt_rate if self.replies else 0.0, g.prompt_tokens / chars)
            self.longest_completion = max(self.longest_completion, g.completion_tokens)
            self.replies += 1
        if self.left is not None:
            self.left -= tokens
        return tokens


def generate_within(
    teacher: ChatModel, requests: Sequence[ChatRequest], budget: TokenBudget | None
) -> list[Generation]:
    """The replies to the longest prefix of `requests` that fits the budget (all of them without one); an
    empty list, with `budget.exhausted` set, when not even the first fits."""
    n = budget.fitting(requests) if budget is not None else len(requests)
    if n == 0:
        return []
    replies = teacher.generate(list(requests[:n]))
    if budget is not None:
        budget.spend(requests[:n], replies)
    return replies


# ------------------------------------------------------------------------------- a run's spend, from disk


def loop_spend(run_dir: Path, max_samples: int | None = None) -> Spend:
    """What an `ioa run` directory has spent so far, from its files (so a resumed run counts what it did
    before the crash): teacher tokens of the diagnosis probes plus every synthesis accounting file, and the
    verified samples those files kept (of a calibration pilot set, those of the modules that train on it)."""
    run_dir = Path(run_dir)
    tokens, samples, exhausted = 0, 0, False
    probes = run_dir / "diagnosis" / "probes.jsonl"
    if probes.exists():
        for line in probes.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("role") == "teacher":
                    tokens += int(row["prompt_tokens"]) + int(row["completion_tokens"])
    for path in sorted(run_dir.rglob("*.accounting.json")):
        acc = json.loads(path.read_text(encoding="utf-8"))
        tokens += int(acc.get("teacher_tokens", 0))
        if "used_modules" in acc:  # a calibration pilot set: only the modules that train on it count
            samples += sum(int(acc.get("modules", {}).get(m, {}).get("kept", 0)) for m in acc["used_modules"])
        else:
            samples += int(acc.get("kept", 0))
        exhausted = exhausted or bool(acc.get("budget_exhausted", False))
    stopped: StopReason = "tokens" if exhausted else "plan"
    if max_samples is not None and samples >= max_samples:
        stopped = "samples"
    return Spend(samples, tokens, stopped)


# ----------------------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class BudgetCheck:
    method: str
    status: Status
    samples: int
    teacher_tokens: int
    budget_samples: int
    budget_tokens: int

    @property
    def sample_ratio(self) -> float | None:
        return self.samples / self.budget_samples if self.budget_samples else None

    @property
    def token_ratio(self) -> float | None:
        return self.teacher_tokens / self.budget_tokens if self.budget_tokens else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sample_ratio": self.sample_ratio, "token_ratio": self.token_ratio}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetCheck:
        return cls(d["method"], d["status"], d["samples"], d["teacher_tokens"], d["budget_samples"], d["budget_tokens"])

    def text(self) -> str:
        tok = f"{self.teacher_tokens:,}/{self.budget_tokens:,} tokens"
        if self.token_ratio is not None:
            tok += f" (×{self.token_ratio:.2f})"
        return f"{self.samples}/{self.budget_samples} samples, {tok}: {self.status.replace('_', '-')}"


def check_budget(
    method: str,
    spend: Spend,
    budget: Spend,
    tolerance: float = 0.05,
    on_shortfall: Literal["error", "record"] = "error",
    *,
    reference: bool = False,
    exempt: bool = False,
) -> BudgetCheck:
    """The module docstring's rule for one method against the budget (N = budget.samples, T = its tokens)."""
    n, t = budget.samples, budget.teacher_tokens

    def result(status: Status) -> BudgetCheck:
        return BudgetCheck(method, status, spend.samples, spend.teacher_tokens, n, t)

    if reference:
        return result("reference")
    if exempt:
        return result("exempt")
    figures = f"{method}: {spend.samples} verified samples and {spend.teacher_tokens:,} teacher tokens"
    target = f"the budget is N = {n} samples and T = {t:,} tokens (±{tolerance:.0%})"
    if spend.teacher_tokens > (1 + tolerance) * t:
        raise BudgetError(f"{figures}: over {target}",
                          "a bug in that method's budget handling: report it with the bench's events.jsonl")
    if spend.samples > (1 + tolerance) * n:
        raise BudgetError(f"{figures}: over {target}",
                          "a bug in that method's budget handling: report it with the bench's events.jsonl")
    if spend.samples < (1 - tolerance) * n:
        limited = spend.stopped_by == "tokens"
        if on_shortfall == "record":
            return result("token_limited" if limited else "under_used")
        if limited:
            raise BudgetError(
                f"{figures}: it spent T before reaching N ({target}); it buys fewer verified samples per token",
                "set budget.on_shortfall: record in the bench config to keep and mark it, or drop the method",
            )
        raise BudgetError(
            f"{figures}: it stopped short of N with tokens left ({target})",
            "give it more seed items or rounds (baselines.*), set budget.on_shortfall: record, or drop the method",
        )
    if spend.teacher_tokens < (1 - tolerance) * t:
        return result("cheaper")
    return result("matched")

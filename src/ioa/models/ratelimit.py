"""Requests-per-minute and tokens-per-minute limits for remote teachers (asyncio, one event loop).

Providers enforce limits over a rolling minute and charge a request's `max_tokens` against the token limit
when it is sent, so the limiter reserves an estimate up front and settles it to the real usage afterwards.
A sliding window (not a token bucket that starts full) keeps the first minute within the limit too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Grant:
    """One reservation in the window; `settle` replaces its amount by what was really used."""

    at: float
    amount: float

    def settle(self, actual: float) -> None:
        self.amount = max(0.0, actual)


class SlidingWindowLimiter:
    """At most `limit` units in any `window` seconds. `acquire` waits (never busy-loops) until it fits."""

    def __init__(
        self,
        limit: float,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = float(limit)
        self.window = float(window)
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[Grant] = deque()
        self._lock: asyncio.Lock | None = None  # created lazily inside the running loop

    def _expire(self, now: float) -> None:
        while self._grants and self._grants[0].at <= now - self.window:
            self._grants.popleft()

    def used(self) -> float:
        self._expire(self._clock())
        return sum(g.amount for g in self._grants)

    async def acquire(self, amount: float = 1.0) -> Grant:
        # A single request larger than the whole limit could never fit: let it through alone instead of
        # deadlocking (the provider will then say 429 and the caller backs off).
        amount = min(float(amount), self.limit)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # FIFO: a big request is not starved by a stream of small ones
            while True:
                now = self._clock()
                self._expire(now)
                used = sum(g.amount for g in self._grants)
                if used + amount <= self.limit:
                    grant = Grant(now, amount)
                    self._grants.append(grant)
                    return grant
                # Wait until enough of the oldest grants leave the window.
                freed, wait = 0.0, self.window
                for g in self._grants:
                    freed += g.amount
                    if used - freed + amount <= self.limit:
                        wait = g.at + self.window - now
                        break
                await self._sleep(max(wait, 0.001))

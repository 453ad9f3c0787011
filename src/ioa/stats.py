"""Small statistics used across the method: Wilson score intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """An observed accuracy k/n with its 95% Wilson interval."""

    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def lower(self) -> float:
        return self.interval[0]

    @property
    def upper(self) -> float:
        return self.interval[1]


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} must lie in [0, n={n}]")
    p = correct / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Exact at the ends: rounding would otherwise leave e.g. 5.6e-17 as the lower bound of 0/n.
    lower = 0.0 if correct == 0 else max(0.0, centre - half)
    upper = 1.0 if correct == n else min(1.0, centre + half)
    return (lower, upper)

"""Small statistics used across the method: Wilson score intervals; mean ± std and a paired bootstrap test
for comparing methods across seeds (`ioa bench`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# ------------------------------------------------------------------------------------ across runs (ioa bench)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the deviation is None for fewer than two values."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of method A against method B: the observed mean difference of A − B (per item,
    averaged over seeds) and the one-sided p-value of H1 "A is better"."""

    delta: float
    p_value: float
    n_items: int
    n_seeds: int
    resamples: int

    def to_dict(self) -> dict[str, float | int]:
        return {"delta": self.delta, "p_value": self.p_value, "n_items": self.n_items, "n_seeds": self.n_seeds,
                "resamples": self.resamples}


def paired_bootstrap(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], resamples: int = 10_000, seed: int = 0
) -> BootstrapResult:
    """Paired bootstrap test (Koehn 2004) of A better than B on the same items and seeds.

    `a[s][i]`, `b[s][i]`: the score (1/0 for correct/wrong) of each method's seed-s student on item i; both
    methods were scored on the same items, and seed s of A is paired with seed s of B. Items are the
    resampling unit: each resample draws len(items) items with replacement and averages d_i, the item's
    difference A − B averaged over seeds. p = (#{resampled mean < 0} + ½·#{= 0}) / resamples: the share
    of resamples in which A is not better, ties counted half, so identical methods give p = 0.5 and A right
    wherever B is wrong (never the reverse) gives p = 0. Fixed `resamples` and `seed`: the same data
    always give the same p.
    """
    import numpy as np

    if len(a) != len(b) or not a:
        raise ValueError(f"paired bootstrap needs the same seeds for both methods (got {len(a)} and {len(b)})")
    if any(len(x) != len(y) for x, y in zip(a, b, strict=True)) or len({len(x) for x in a}) != 1:
        raise ValueError("paired bootstrap needs every seed of both methods scored on the same items")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    d = (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean(axis=0)
    n = d.size
    if n == 0:
        raise ValueError("paired bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    below = ties = 0
    chunk = max(1, 2_000_000 // n)  # bounded memory for large item sets
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        means = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
        # Differences of 0/1 scores averaged over seeds are multiples of 1/(n·seeds): round off float noise.
        means = np.round(means, 12)
        below += int((means < 0).sum())
        ties += int((means == 0).sum())
        done += k
    return BootstrapResult(float(d.mean()), (below + 0.5 * ties) / resamples, int(n), len(a), resamples)

"""Stage data: the difficulty ladder (one level at a time, up to the top or a rung cap) and stable derived seeds."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections import Counter

import pytest

from ioa.teaching import derived_seed, ladder


@pytest.mark.parametrize("start", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7, 48, 100])
@pytest.mark.parametrize("rungs", [None, 3])
def test_ladder_shape(start: int, n: int, rungs: int | None) -> None:
    levels = ladder(start, 5, n, rungs)
    assert len(levels) == n
    assert levels == sorted(levels)  # easiest first
    climbed = sorted(set(levels))
    assert all(start <= lv <= 5 for lv in levels)
    if rungs is not None:
        assert len(climbed) <= rungs
    if n:
        assert climbed[0] == start
        assert all(b - a == 1 for a, b in itertools.pairwise(climbed))  # never skips a level
        counts = Counter(levels)
        assert counts[start] == max(counts.values())  # most practice at the entry level
    if n >= 15 and rungs is None:
        assert climbed[-1] == 5  # every level above the entry is reached


def test_ladder_counts() -> None:
    assert Counter(ladder(1, 5, 60)) == {1: 20, 2: 16, 3: 12, 4: 8, 5: 4}  # 5:4:3:2:1, up to the top
    assert Counter(ladder(2, 5, 48)) == {2: 21, 3: 14, 4: 9, 5: 4}  # 4:3:2:1 (19, 14, 9, 4; remainder 2 to the entry)
    assert Counter(ladder(2, 5, 48, rungs=3)) == {2: 24, 3: 16, 4: 8}  # capped at three rungs: 3:2:1
    assert Counter(ladder(4, 5, 48)) == {4: 32, 5: 16}  # two rungs left to the top: 2:1
    assert Counter(ladder(5, 5, 10)) == {5: 10}
    assert Counter(ladder(1, 5, 7, rungs=3)) == {1: 4, 2: 2, 3: 1}  # the remainder goes to the entry level
    assert ladder(1, 5, 1) == [1]
    assert ladder(3, 5, 0) == []


def test_ladder_with_few_levels() -> None:
    assert ladder(1, 1, 4) == [1, 1, 1, 1]
    assert Counter(ladder(1, 2, 9)) == {1: 6, 2: 3}
    with pytest.raises(ValueError, match="at least one rung"):
        ladder(1, 5, 3, rungs=0)


def test_ladder_rejects_a_start_below_the_levels() -> None:
    with pytest.raises(ValueError, match="outside the ladder"):
        ladder(0, 5, 3)


def test_ladder_rejects_a_start_above_the_levels() -> None:
    with pytest.raises(ValueError, match="outside the ladder"):
        ladder(6, 5, 3)


def test_derived_seed_is_stable_and_distinct() -> None:
    seed = derived_seed(0, "stage", 2, "add")
    assert seed == derived_seed(0, "stage", 2, "add")
    assert 0 <= seed < 2**32
    assert len({derived_seed(0, "stage", i, m) for i in range(10) for m in ("add", "sub", "mul")}) == 30
    assert derived_seed(1, 2) != derived_seed(12)
    assert derived_seed("1") != derived_seed(1)


def test_derived_seed_is_the_same_in_another_process() -> None:
    """Not Python's salted hash(): a rerun (a new process) asks the teacher the same questions."""
    code = "from ioa.teaching import derived_seed; print(derived_seed(7, 'remedial', 'fractions', 1))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert int(out.stdout) == derived_seed(7, "remedial", "fractions", 1)


def test_derived_seed_pinned_values() -> None:
    """Changing the derivation silently invalidates every cached teacher call of existing runs."""
    assert derived_seed(7, "remedial", "fractions", 1) == 1203741613
    assert derived_seed(0, "stage", 2, "add") == 492149360


def test_a_dry_level_passes_its_shortfall_one_level_up() -> None:
    from ioa.domains.arithmetic import ArithmeticDomain
    from ioa.teaching import items_for

    domain = ArithmeticDomain()
    pools = {lv: len(domain.items("single_digit_add", 500, 0, "train", level=lv)) for lv in (1, 2, 3)}
    assert sum(pools.values()) < 30  # single-digit sums: a tiny pool per level and split
    items = items_for(domain, "single_digit_add", ladder(1, 5, 58, rungs=3), seed=3)
    by_level = Counter(i.level for i in items)
    assert len(items) == 58 and len({i.prompt for i in items}) == 58
    assert {lv: by_level[lv] for lv in (1, 2, 3)} == pools  # every easier item first
    assert by_level[4] == 58 - sum(pools.values()) and by_level[5] == 0  # then the next level, not a skip
    # A roomy level is not topped up from above: exactly what the ladder asked for.
    levels = ladder(1, 5, 58)
    roomy = Counter(i.level for i in items_for(domain, "multi_digit_add", levels, seed=3))
    assert roomy == Counter(levels)

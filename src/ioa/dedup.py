"""Near-duplicate removal and n-gram decontamination of synthetic data (DESIGN §4)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")


def tokens(text: str) -> list[str]:
    """Lower-cased words, numbers and single symbols: `12+7` and `12 + 7` tokenise alike."""
    return _WORD.findall(text.lower())


def ngrams(toks: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token sequences: longest common subsequence over their lengths."""
    if not a or not b:
        return 1.0 if a == b else 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 2 * lcs / (len(a) + len(b))


def near_duplicates(texts: Sequence[str], threshold: float) -> list[int]:
    """Indices of texts whose ROUGE-L with an earlier kept text is ≥ threshold (DESIGN §4: 0.9).

    A cheap bound skips most pairs: ROUGE-L ≤ 2·min/(len a + len b), so very different lengths never match.
    """
    kept: list[list[str]] = []
    exact: set[tuple[str, ...]] = set()
    dropped: list[int] = []
    for i, text in enumerate(texts):
        toks = tokens(text)
        similar = tuple(toks) in exact or any(
            2 * min(len(toks), len(k)) / max(1, len(toks) + len(k)) >= threshold and rouge_l(toks, k) >= threshold
            for k in kept
        )
        if similar:
            dropped.append(i)
            continue
        exact.add(tuple(toks))
        kept.append(toks)
    return dropped


class Decontaminator:
    """Flags texts that share an n-gram with any protected text (probes, gate items, benchmarks).

    Texts shorter than n tokens (e.g. `What is 7 + 8?`) are compared whole, so a short training
    problem is contaminated only if it is the same problem; a longer text is contaminated by a short
    protected text only if it contains that text word for word.
    """

    def __init__(self, protected: Iterable[str], n: int) -> None:
        self.n = n
        self._grams: set[tuple[str, ...]] = set()
        self._short: dict[int, set[tuple[str, ...]]] = {}  # protected texts under n tokens, by length
        for text in protected:
            toks = tokens(text)
            if 0 < len(toks) < n:
                self._short.setdefault(len(toks), set()).add(tuple(toks))
            else:
                self._grams |= ngrams(toks, n)

    def contaminated(self, text: str) -> bool:
        toks = tokens(text)
        if not self._grams.isdisjoint(ngrams(toks, self.n)):
            return True
        return any(
            not whole.isdisjoint(ngrams(toks, length)) for length, whole in self._short.items() if length <= len(toks)
        )

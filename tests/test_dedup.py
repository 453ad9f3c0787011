"""Near-duplicate removal and n-gram decontamination."""

from __future__ import annotations

import pytest

from ioa.dedup import Decontaminator, near_duplicates, ngrams, rouge_l, tokens

WORD_PROBLEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Show every step of your work clearly."
)


def test_tokens_ignore_case_and_spacing_around_symbols() -> None:
    assert tokens("What is 12+7?") == tokens("what is 12 + 7 ?") == ["what", "is", "12", "+", "7", "?"]
    assert tokens("Pay $3.50, then 1/2") == ["pay", "$", "3.50", ",", "then", "1", "/", "2"]


def test_ngrams_and_rouge_l() -> None:
    assert ngrams(["a", "b", "c", "d"], 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert ngrams(["a", "b"], 3) == {("a", "b")}  # shorter than n: the whole text is its one gram
    assert ngrams([], 3) == set()
    # LCS of "a b c d" and "a x c d" is "a c d" (3): F1 = 2·3 / (4 + 4) = 0.75
    assert rouge_l(list("abcd"), list("axcd")) == 0.75
    # LCS of "a b c" and "c b a" is 1: 2·1 / 6
    assert rouge_l(list("abc"), list("cba")) == pytest.approx(1 / 3)
    assert rouge_l([], []) == 1.0
    assert rouge_l(["a"], []) == 0.0


def test_exact_duplicates_are_dropped_after_normalisation() -> None:
    texts = ["What is 7 + 8?", "what is 7+8 ?", "What is 7 + 9?", "WHAT IS 7 + 8?", "What is 8 + 7?"]
    assert near_duplicates(texts, threshold=0.9) == [1, 3]  # order matters: 8 + 7 is another problem


def test_near_duplicates_are_dropped_distinct_texts_kept() -> None:
    near = WORD_PROBLEM.replace("Show every step", "Show each step")  # one word of 42 tokens changed
    other = "A baker makes 24 loaves a day and sells them for $3 each. How much does she earn in a week?"
    sim = rouge_l(tokens(WORD_PROBLEM), tokens(near))
    assert len(tokens(near)) == 42 and sim == pytest.approx(41 / 42)  # LCS 41 of 42 tokens each
    assert near_duplicates([WORD_PROBLEM, near, other], threshold=0.9) == [1]
    assert near_duplicates([WORD_PROBLEM, near, other], threshold=0.99) == []  # below the threshold: kept


def test_threshold_is_inclusive_and_compares_with_kept_texts_only() -> None:
    a = "one two three four five"
    b = "one two three four six"  # LCS 4 of 5 → ROUGE-L 0.8
    assert rouge_l(tokens(a), tokens(b)) == pytest.approx(0.8)
    assert near_duplicates([a, b], threshold=0.8) == [1]
    assert near_duplicates([a, b], threshold=0.81) == []
    # b is dropped as a's near-duplicate; c is as close to b, but is compared with the kept a only.
    a, b, c = "p q r s t u", "p q r s t v", "x q r s t v"
    assert rouge_l(tokens(a), tokens(b)) == pytest.approx(5 / 6)
    assert rouge_l(tokens(b), tokens(c)) == pytest.approx(5 / 6)
    assert rouge_l(tokens(a), tokens(c)) == pytest.approx(4 / 6)
    assert near_duplicates([a, b, c], threshold=0.8) == [1]


def test_no_texts() -> None:
    assert near_duplicates([], 0.9) == []


def test_decontaminator_short_texts_are_compared_whole() -> None:
    d = Decontaminator(["What is 7 + 8?", "What is 12 x 3?"], n=8)
    assert d.contaminated("what is 7+8?")
    assert not d.contaminated("What is 7 + 9?")  # shares 5 of 6 tokens, but is another problem
    assert not d.contaminated("What is 8 + 7?")
    assert not d.contaminated("What is 12 x 4?")


def test_decontaminator_long_texts_by_ngram() -> None:
    d = Decontaminator([WORD_PROBLEM], n=8)
    lifted = "Here is a story. Natalia sold clips to 48 of her friends in April, and then she bought a cat."
    assert d.contaminated(lifted)  # shares the 8-gram "natalia sold clips to 48 of her friends"
    reworded = "Natalia sold pens to 48 of her classmates in April and then half as many in May. How many pens?"
    assert not d.contaminated(reworded)
    assert not d.contaminated("What is 48 / 2?")
    assert not d.contaminated("")


def test_decontaminator_a_short_protected_text_inside_a_longer_one() -> None:
    d = Decontaminator(["What is 7 + 8?"], n=8)
    assert d.contaminated("Sam asks his sister: what is 7 + 8? She counts on her fingers to find out.")
    assert not d.contaminated("Sam asks his sister what 7 + 8 is. She counts on her fingers.")


@pytest.mark.parametrize("n", [1, 3, 13])
def test_decontaminator_n(n: int) -> None:
    d = Decontaminator(["the quick brown fox jumps over the lazy dog"], n=n)
    assert d.contaminated("the quick brown fox jumps over the lazy dog")
    assert d.contaminated("a quick brown fox") == (n <= 3)


def test_decontaminator_without_protected_texts_flags_nothing() -> None:
    assert not Decontaminator([], n=8).contaminated("What is 7 + 8?")

"""The answer extractor and checker against reply shapes the models really produce.

Excerpts marked smollm2 / qwen0.5b / qwen1.5b are verbatim (trimmed to the tail that matters) from
SmolLM2-135M-Instruct Q4_1 (the student) and Qwen2.5-Coder-0.5B/1.5B-Instruct Q4_K_M (the teachers),
greedy decoding, asked with and without SOLVE_SYSTEM_PROMPT. Excerpts marked design are the habits
recorded in DESIGN §7; the rest are synthetic edge cases of the normalisation rules.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from ioa.domains.answers import (
    answers_match,
    check_response,
    clean_latex,
    extract_answer,
    format_number,
    parse_number,
)

# (reply, expected extraction)
REPLIES: list[tuple[str, str | None]] = [
    # --- smollm2: rarely follows '####'; "The answer is" or nothing at all ---------------------------
    ("17 + 25 = 32\n\nThe answer is 32.", "32"),
    ("12 × 13 = 196\n\nThe answer is 196.", "196"),
    ("184 + 598 = 184 + 598 = 184 * 2 = 342\n\nThe answer is 342.", "342"),
    ("So, the final answer is 703 + 258 = 1021.\n\nSo, the answer is 1021.", "1021"),
    ("703 - 258 is 1.", "1"),
    ("Now, we can add these two results: 12 + 8 = 14.\n\nSo, the answer is 14.", "14"),
    ("Now we can add these fractions: 3/4 + 3/4 = 7/4.\n\nSo, the answer is 7/4.", "7/4"),
    ("Now, we add these fractions:\n\n(0.7 + 0.5) = 1.2\n\nSo, the answer is 1.2.", "1.2"),
    ("The answer is 0.7.", "0.7"),
    ("15% of 80 is 0.15 * 80 = 10.", "10"),
    ("1,248 ÷ 6 = 21.", "21"),
    # "the answer is" then an equation chain: the value after the last '='.
    ("So, the answer is 1/2 + 1/4 = 2/4 + 1/4 = 3/4.\n\nThis is the answer to the original equation.", "3/4"),
    # Only the sentence after "the answer is" counts, not the explanation that follows.
    (
        "So, the answer is 0.\n\nThis is a classic example of a simple division problem, where the answer is simply 0.",
        "0",
    ),
    ("Then we multiply 4.5 by 2.2, which gives us 8.125.\n\nSo, the answer is 8.125.", "8.125"),
    ("The total amount of money she makes is $20 + $2 = $22.\n\n#### 22\nThe answer is: 22", "22"),
    ("The original price of the house was $80,000. 1500 * $80 = $120,000.\n\nSo, the answer is 100.", "100"),
    # No stated answer: the last number wins, even where a reader sees 32 (the limit of any fallback).
    (
        "17 + 25 = 32\n\nThis is a classic example of a mathematical identity. In this case, 17 + 25 is a simple "
        "addition of 17 and 25, which is a fundamental operation in arithmetic.",
        "25",
    ),
    (
        "Now we can add these two values together: 8 bolts of blue fiber + 4 bolts of blue fiber = 12 bolts of "
        "blue fiber.\n\nSo, there are 12 bolts of blue fiber in the robe.",
        "12",
    ),
    # Looping until max_tokens, cut mid-sentence.
    (
        "She makes 10800 x 4 = 40400 dollars per day.\nShe makes 10800 x 4 = 40400 dollars per day.\n"
        "She makes 10800 x 4",
        "4",
    ),
    ("He runs 180 * 3 = 540 meters per week.  He runs 180 * 3 = 540 meters per week.  He runs 180 * 3", "3"),
    # --- qwen0.5b: with SOLVE_SYSTEM_PROMPT it often answers with the '####' line alone ---------------
    ("#### 156", "156"),
    ("#### 1442", "1442"),  # wrong (184 + 598), but that is what it said
    ("#### 2/3 + 2/3 = 4/3", "4/3"),  # an equation on the '####' line: its last number
    ("#### 5.4", "5.4"),
    ("184 + 598 equals 782.", "782"),
    (
        "#### 150% Profit\nJosh made a 150% profit by adding the repairs to the original value of the house. The "
        "original value of the house was $80,000, and after adding the repairs, the value became $80,000 + $50,000 "
        "= $130,000.",
        "150",
    ),
    (
        "\\[\n\\frac{6}{8} \\div 2 = \\frac{6 \\div 2}{8 \\div 2} = \\frac{3}{4}\n\\]\n\nTherefore, the value of "
        "the expression \\( \\frac{1}{2} + \\frac{1}{4} \\) is \\(\\boxed{\\frac{3}{4}}\\).",
        "3/4",
    ),
    (
        "Step 3: Add the number of bolts of blue fiber and white fiber to get the total number of bolts.\n"
        "\\[ \\text{Total number of bolts} = 2 + 1 = 3 \\]\n\nThus, the total number of bolts in the robe is "
        "\\(\\boxed{3}\\).",
        "3",
    ),
    # Asked with a variant prompt it wrote steps, stated the answer, then ran out of tokens inside code:
    # "the answer is" must beat the last number (a 4 in the code).
    (
        "   - Therefore, the total revenue is \\(7 \\times 2 = 14\\).\n\n5. **Write the final answer:**\n"
        "   - The final answer is \\(14\\).\n\nLet's confirm this with Python code.\n```python\n"
        "# Number of eggs Janet eats for breakfast every morning\neggs_per_morning = 3\n\n"
        "# Number of eggs Janet eats for muffins every day\neggs_per_muffin = 4\n\n# Number of eggs Janet sells\n"
        "eggs_sold = eggs_per_morning + eggs_per_muffin\n\n",
        "14",
    ),
    # --- qwen1.5b: steps in LaTeX, then '####' (sometimes inside display math) or \boxed --------------
    ("12 × 13 = 156\n#### 156", "156"),
    (
        "2. **Addition**: Next, we perform the addition.\n   \\[\n   3 + 20 = 23\n   \\]\n\n"
        "Therefore, the final answer is:\n\\[\n#### 23\n\\]",
        "23",
    ),
    (
        "4. **Perform the addition**: \\(3 + 20 = 23\\).\n\nSo, the value of the expression \\(3 + 4 \\times 5\\) "
        "is \\(\\boxed{23}\\).",
        "23",
    ),
    (
        "6. To ensure the fraction is in lowest terms, we need to check if 4 and 3 have any common factors other "
        "than 1. Since 4 and 3 are both prime numbers, they have no common factors other than 1.\n"
        "Therefore, the final answer is:\n#### 4/3",
        "4/3",
    ),
    (
        "1 1/4 = 5/4\nNow, add the fractions:\n1/2 + 5/4 = (2/4) + (5/4) = 7/4\nThe final answer is:\n#### 1 3/4",
        "1 3/4",  # a mixed number: equal to 7/4 (see MATCHES)
    ),
    (
        "7. Calculate the total revenue from selling the eggs:\n   \\[\n   9 \\text{ eggs/day} \\times 2 "
        "\\text{ dollars/egg} = 18 \\text{ dollars/day}\n   \\]\n\n#### 18",
        "18",
    ),
    ("2 bolts of blue fiber\n1 bolt of white fiber\n2 + 1 = 3 bolts in total", "3"),  # no format at all
    (
        "Step 3: Add the number of bolts of blue fiber and white fiber together to get the total number of bolts.\n"
        "The total number of bolts is:\n\\[\n2 + 1 = 3\n\\]\n\nThus, the total number of bolts of fiber needed is "
        "\\boxed{3}.",
        "3",
    ),
    (
        "60 meters/sprint × 3 sprints/week = 180 meters/week\n\nFinally, calculate the total distance he runs in a "
        "week by multiplying the distance per week by the number of weeks in a week:\n180 meters/week × 3 weeks = "
        "540 meters/week\n\n#### 540",
        "540",
    ),
    # --- design (DESIGN §7) ---------------------------------------------------------------------------
    ("184 + 598 = 782\n#### 184 + 598 = 782", "782"),  # qwen0.5b: the last number of the '####' line
    ("#### #1\n#### #2\n#### #3\n#### #32", "32"),  # smollm2 looping on the format
    ("#### #1 #### #2 #### #3", "3"),
    ("So she makes 9 * $2 = $18 every day.\n\nThe final answer is $\\boxed{18}$.", "18"),  # qwen1.5b
    ("Therefore, Janet makes \\(\\boxed{18}\\) dollars every day at the farmers' market.", "18"),
    # --- synthetic: formats and normalisation ---------------------------------------------------------
    ("#### 1,234", "1234"),
    ("#### $1,234.50", "1234.50"),
    ("#### -7", "-7"),
    ("####\n42", "42"),
    ("#### 12 apples.", "12"),
    ("#### 5 dollars", "5"),
    ("####72", "72"),
    ("#### 1 1/2", "1 1/2"),
    ("#### Step 1: 16 - 3 = 13\nShe sells 13 - 4 = 9 eggs.\n\\boxed{18}", "18"),  # a heading is not an answer
    ("#### Final Answer: 18", "18"),
    ("The answer is \\boxed{\\frac{3}{4}}.", "3/4"),
    ("\\boxed{\\dfrac{17}{12}}", "17/12"),
    ("\\boxed{2\\frac{1}{2}}", "2 1/2"),
    ("\\boxed{\\frac{\\frac{1}{2}}{3}}", "1/6"),
    ("\\boxed{\\frac12}", "1/2"),
    ("\\boxed{1{,}080}", "1080"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    ("\\boxed{\\$18.00}", "18.00"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{\\text{yes}}", "yes"),
    ("\\boxed{3} is wrong, \\boxed{4}", "4"),
    ("**Answer:** $18", "18"),
    ("Answer: 12 apples", "12"),
    ("The answer is 25%.", "25"),
    ("The answer is -5.", "-5"),
    ("The answer is 3.5 hours.", "3.5"),
    ("The answer is Paris.", "paris"),
    ("10-3=7", "7"),  # a binary minus is not a negative number
    ("The temperature fell to -3 degrees.", "-3"),
    ("It costs .5 dollars", ".5"),
    ("", None),
    ("I am not sure.", None),
]


@pytest.mark.parametrize(("reply", "expected"), REPLIES)
def test_extract_answer(reply: str, expected: str | None) -> None:
    assert extract_answer(reply) == expected


def test_the_table_is_large_and_mostly_real() -> None:
    assert len(REPLIES) >= 40


# (predicted, reference, match?)
MATCHES: list[tuple[str | None, str, bool]] = [
    ("0.5", "1/2", True),
    ("1/2", "0.5", True),
    ("3/4", "0.75", True),
    ("1 1/2", "1.5", True),
    ("1 1/2", "3/2", True),
    ("12.0", "12", True),
    ("12.00", "12", True),
    ("1234", "1,234", True),
    ("$5", "5", True),
    ("25%", "25", True),
    ("12 apples", "12", True),
    ("-3", "-3.0", True),
    ("0.3333333", "1/3", True),  # a rounded float within 1e-6
    ("0.333", "1/3", False),
    ("1000001", "1000000", False),  # whole numbers are compared exactly
    ("5", "6", False),
    ("-5", "5", False),
    (None, "5", False),
    ("yes", "Yes.", True),
    ("paris", "London", False),
    ("yes", "3", False),
    ("7/4", "1 3/4", True),
]


@pytest.mark.parametrize(("predicted", "reference", "expected"), MATCHES)
def test_answers_match(predicted: str | None, reference: str, expected: bool) -> None:
    assert answers_match(predicted, reference) is expected


def test_check_response_end_to_end() -> None:
    assert check_response("184 + 598 = 782\n#### 184 + 598 = 782", "782")
    assert check_response("So the share is \\boxed{\\frac{1}{2}}.", "0.5")
    assert not check_response("17 + 25 = 32\n\nThe answer is 32.", "42")
    assert not check_response("", "0")


@pytest.mark.parametrize(
    ("text", "value"),
    [("$1,234", Fraction(1234)), ("1 1/2", Fraction(3, 2)), ("-1 1/2", Fraction(-3, 2)), ("75%", Fraction(75)),
     ("0.125", Fraction(1, 8)), ("3/0", None), ("2 and 3", None), ("none", None)],
)  # fmt: skip
def test_parse_number(text: str, value: Fraction | None) -> None:
    assert parse_number(text) == value


def test_format_number_is_canonical() -> None:
    assert [format_number(Fraction(x)) for x in ("12", "3/4", "-7/8", "1/3", "5/2", "0.1")] == [
        "12", "0.75", "-0.875", "1/3", "2.5", "0.1",
    ]  # fmt: skip
    for text in ("12", "0.75", "1/3", "-2.5"):
        assert format_number(parse_number(text)) == text


def test_clean_latex() -> None:
    assert clean_latex("\\frac{1}{2} + \\dfrac{a}{b}") == "1/2 + (a)/(b)"
    assert clean_latex("\\$5\\,000 \\times 2") == "$5000  *  2"

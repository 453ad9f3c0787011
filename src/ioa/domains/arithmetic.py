"""A procedural arithmetic domain: 14 modules with real prerequisites, fresh exact items from a seed.

Each module has a generator `(rng, level) -> Problem`. Level 1 is the smallest instance that shows the idea;
each level grows the problem one notch (DESIGN §4, cognitive load). Answers are computed exactly (integers
or `Fraction`) and written as canonical strings; a short step-by-step reference solution comes with each.
Splits never share a prompt: every prompt belongs to exactly one split by a hash of its text.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from typing import get_args

from ioa.domains.answers import SOLVE_SYSTEM_PROMPT, check_response, format_number
from ioa.domains.base import Item, Module, Split, check_item_request
from ioa.errors import DomainError
from ioa.models.base import Message

LEVELS = 5
SPLITS: tuple[Split, ...] = get_args(Split)
# Consecutive draws that bring nothing new before a (module, level, split) pool counts as exhausted;
# only the tiny level-1 pools ever get there.
_MAX_MISSES = 1000


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str
    solution: str


Generator = Callable[[random.Random, int], Problem]


def split_of(prompt: str) -> Split:
    """The one split a prompt belongs to (a hash partition of the text: same prompt, same split, always)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return SPLITS[int.from_bytes(digest[:8], "big") % len(SPLITS)]


def _solution(steps: list[str], answer: str) -> str:
    return "\n".join([*steps, f"#### {answer}"])


def _ask(expr: str) -> str:
    return f"What is {expr}?"


def _digits(rng: random.Random, k: int) -> int:
    """A random k-digit number."""
    return rng.randint(10 ** (k - 1), 10**k - 1)


def _place_parts(n: int) -> list[int]:
    """784 → [700, 80, 4]: the place-value split used in every written method below."""
    parts = [int(d) * 10**i for i, d in enumerate(reversed(str(n)))]
    return [p for p in reversed(parts) if p] or [0]


def _frac(value: Fraction) -> str:
    """Lowest-terms fraction text ("17/12", or "3" when whole)."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# --- 1. single-digit addition -------------------------------------------------------------------------


def _running_sum(terms: list[int], op: str = "+") -> Problem:
    steps, total = [], terms[0]
    for t in terms[1:]:
        new = total + t if op == "+" else total - t
        steps.append(f"{total} {op} {t} = {new}.")
        total = new
    return Problem(_ask(f" {op} ".join(map(str, terms))), str(total), _solution(steps, str(total)))


def single_digit_add(rng: random.Random, level: int) -> Problem:
    if level >= 4:  # three, then four addends
        return _running_sum([rng.randint(1, 9) for _ in range(level - 1)])
    while True:
        if level == 1:
            a, b = rng.randint(0, 5), rng.randint(0, 5)
            ok = True
        elif level == 2:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            ok = a + b <= 10 and max(a, b) > 5
        else:  # crossing ten
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            ok = a + b > 10
        if ok:
            return _running_sum([a, b])


# --- 2. single-digit subtraction ----------------------------------------------------------------------


def single_digit_sub(rng: random.Random, level: int) -> Problem:
    if level == 5:
        while True:
            a, b, c = rng.randint(10, 20), rng.randint(1, 9), rng.randint(1, 9)
            if a - b - c >= 0:
                return _running_sum([a, b, c], "-")
    if level == 1:
        a = rng.randint(1, 5)
        b = rng.randint(0, a)
    elif level == 2:
        a = rng.randint(6, 10)
        b = rng.randint(0, a)
    elif level == 3:  # back across ten: 14 - 6
        while True:
            a, b = rng.randint(11, 18), rng.randint(2, 9)
            if a - b < 10:
                break
    else:  # teen minus teen
        a = rng.randint(11, 20)
        b = rng.randint(10, a)
    d = a - b
    if level == 3:
        steps = [f"Take {a - 10} away to reach ten: {a} - {a - 10} = 10.", f"Then 10 - {b - (a - 10)} = {d}."]
    else:
        steps = [f"{a} - {b} = {d}."]
    return Problem(_ask(f"{a} - {b}"), str(d), _solution(steps, str(d)))


# --- 3./4. multi-digit addition and subtraction (with carries / borrows) -----------------------------

_ADD_SUB_DIGITS = {1: (2, 1), 2: (2, 2), 3: (3, 2), 4: (3, 3), 5: (4, 4)}


def _column_pairs(a: int, b: int) -> list[tuple[int, int]]:
    da, db = str(a)[::-1], str(b)[::-1]
    return [(int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0) for i in range(len(da))]


def _stepwise(a: int, b: int, op: str) -> list[str]:
    """a ± b by adding/subtracting b's place-value parts one at a time: 184 + 598 → +500, +90, +8."""
    parts = _place_parts(b)
    steps, total = ([f"Split {b} into {' + '.join(map(str, parts))}."] if len(parts) > 1 else []), a
    for part in parts:
        new = total + part if op == "+" else total - part
        steps.append(f"{total} {op} {part} = {new}.")
        total = new
    return steps


def multi_digit_add(rng: random.Random, level: int) -> Problem:
    ka, kb = _ADD_SUB_DIGITS[level]
    while True:
        a, b = _digits(rng, ka), _digits(rng, kb)
        if rng.random() < 0.5:
            a, b = b, a
        if any(x + y >= 10 for x, y in _column_pairs(max(a, b), min(a, b))):  # the idea: a carry
            s = a + b
            return Problem(_ask(f"{a} + {b}"), str(s), _solution(_stepwise(a, b, "+"), str(s)))


def multi_digit_sub(rng: random.Random, level: int) -> Problem:
    ka, kb = _ADD_SUB_DIGITS[level] if level < 5 else (4, 3 + rng.randint(0, 1))
    while True:
        a, b = _digits(rng, ka), _digits(rng, kb)
        if a > b and any(x < y for x, y in _column_pairs(a, b)):  # the idea: a borrow
            d = a - b
            return Problem(_ask(f"{a} - {b}"), str(d), _solution(_stepwise(a, b, "-"), str(d)))


# --- 5. multiplication tables -------------------------------------------------------------------------


def times_tables(rng: random.Random, level: int) -> Problem:
    if level == 5:  # three factors: a table fact, then a ×10-12 fact
        while True:
            a, b, c = rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 9)
            if a * b <= 12:
                break
        p = a * b * c
        steps = [f"{a} × {b} = {a * b}.", f"{a * b} × {c} = {p}."]
        return Problem(_ask(f"{a} × {b} × {c}"), str(p), _solution(steps, str(p)))
    if level == 1:
        a, b = rng.randint(1, 5), rng.randint(1, 5)
    elif level == 2:
        a, b = rng.randint(2, 9), rng.choice((2, 5, 10))
    elif level == 3:
        a, b = rng.randint(6, 9), rng.randint(3, 9)
    else:
        a, b = rng.randint(10, 12), rng.randint(2, 12)
    if rng.random() < 0.5:
        a, b = b, a
    p = a * b
    if 2 <= min(a, b) <= 5:  # small facts: show them as repeated addition
        few, many = min(a, b), max(a, b)
        steps = [f"{a} × {b} means {few} groups of {many}: {' + '.join([str(many)] * few)} = {p}."]
    else:
        steps = [f"{a} × {b} = {p}."]
    return Problem(_ask(f"{a} × {b}"), str(p), _solution(steps, str(p)))


# --- 6. multi-digit multiplication --------------------------------------------------------------------


def multi_digit_mul(rng: random.Random, level: int) -> Problem:
    while True:
        if level <= 2:
            a, b = _digits(rng, 2), rng.randint(2, 9)
            no_carry = all(0 < int(d) * b < 10 for d in str(a))
            if no_carry == (level == 1):  # level 1 without carries (or zero digits), level 2 with
                break
        else:
            a, b = {3: (_digits(rng, 3), rng.randint(2, 9)), 4: (_digits(rng, 2), _digits(rng, 2))}.get(
                level, (_digits(rng, 3), _digits(rng, 2))
            )
            break
    p = a * b
    # Split the factor with fewer digits into place-value parts, unless it is a single part (70, 8).
    split = min((a, b), key=lambda x: (len(_place_parts(x)) == 1, len(str(x))))
    other = b if split == a else a
    parts = _place_parts(split)
    if len(parts) == 1:
        steps = [f"{a} × {b} = {p}."]
    else:
        products = [part * other for part in parts]
        steps = [f"Split {split} into {' + '.join(map(str, parts))}."]
        steps += [f"{part} × {other} = {q}." for part, q in zip(parts, products, strict=True)]
        steps.append(f"{' + '.join(map(str, products))} = {p}.")
    return Problem(_ask(f"{a} × {b}"), str(p), _solution(steps, str(p)))


# --- 7. division --------------------------------------------------------------------------------------


def division(rng: random.Random, level: int) -> Problem:
    d, q = {
        1: (rng.randint(2, 5), rng.randint(1, 5)),
        2: (rng.randint(2, 9), rng.randint(6, 9)),
        3: (rng.randint(2, 9), rng.randint(10, 99)),
        4: (rng.randint(2, 9), rng.randint(100, 999)),
        5: (rng.randint(11, 25), rng.randint(10, 99)),
    }[level]
    n = d * q
    if q < 10:
        steps = [f"Which number times {d} makes {n}? {d} × {q} = {n}."]
    else:  # long division as chunks of the quotient's place values
        steps, rest = [], n
        for part in _place_parts(q):
            steps.append(f"{d} × {part} = {d * part}; {rest} - {d * part} = {rest - d * part}.")
            rest -= d * part
        if len(_place_parts(q)) > 1:
            steps.append(f"{' + '.join(map(str, _place_parts(q)))} = {q}.")
    return Problem(_ask(f"{n} ÷ {d}"), str(q), _solution(steps, str(q)))


# --- 8. order of operations ---------------------------------------------------------------------------


def order_of_operations(rng: random.Random, level: int) -> Problem:
    r = rng.randint
    while True:
        if level == 1:
            a, b, c = r(2, 9), r(2, 9), r(2, 9)
            expr, v = f"{a} + {b} × {c}", a + b * c
            steps = [f"Multiply first: {b} × {c} = {b * c}.", f"Then add: {a} + {b * c} = {v}."]
        elif level == 2:
            a, b, c, d = r(2, 9), r(2, 9), r(2, 9), r(2, 9)
            expr, v = f"{a} × {b} + {c} × {d}", a * b + c * d
            steps = [
                f"Multiply first: {a} × {b} = {a * b} and {c} × {d} = {c * d}.",
                f"Then add: {a * b} + {c * d} = {v}.",
            ]
        elif level == 3:
            a, b, c = r(2, 9), r(2, 9), r(2, 9)
            if rng.random() < 0.5:
                expr, inner, v = f"({a} + {b}) × {c}", a + b, (a + b) * c
                steps = [f"Brackets first: {a} + {b} = {inner}.", f"Then {inner} × {c} = {v}."]
            else:
                a, b = max(a, b) + c, min(a, b)
                expr, inner, v = f"{c} × ({a} - {b})", a - b, c * (a - b)
                steps = [f"Brackets first: {a} - {b} = {inner}.", f"Then {c} × {inner} = {v}."]
        elif level == 4:
            a, b, c, e, k = r(2, 20), r(2, 9), r(2, 9), r(2, 9), r(2, 9)
            d = e * k
            expr, v = f"{a} + {b} × {c} - {d} ÷ {e}", a + b * c - k
            steps = [
                f"Multiply and divide first: {b} × {c} = {b * c} and {d} ÷ {e} = {k}.",
                f"Then left to right: {a} + {b * c} = {a + b * c}, {a + b * c} - {k} = {v}.",
            ]
        else:
            a, b, c, f, k = r(2, 9), r(2, 9), r(2, 9), r(1, 5), r(2, 9)
            e = f + r(1, 4)
            d = (e - f) * k
            expr, v = f"({a} + {b}) × {c} - {d} ÷ ({e} - {f})", (a + b) * c - k
            steps = [
                f"Brackets first: {a} + {b} = {a + b} and {e} - {f} = {e - f}.",
                f"Then multiply and divide: {a + b} × {c} = {(a + b) * c} and {d} ÷ {e - f} = {k}.",
                f"Then subtract: {(a + b) * c} - {k} = {v}.",
            ]
        if v >= 0:
            return Problem(_ask(expr), str(v), _solution(steps, str(v)))


# --- 9. fractions -------------------------------------------------------------------------------------

_FRACTION_NOTE = " Give the answer as a fraction in lowest terms."


def _fraction_text(x: Fraction, mixed: bool = False) -> str:
    whole = x.numerator // x.denominator
    if mixed and whole and x.denominator != 1:
        return f"{whole} {x.numerator - whole * x.denominator}/{x.denominator}"
    return f"{x.numerator}/{x.denominator}"


def fractions(rng: random.Random, level: int) -> Problem:
    r = rng.randint
    while True:
        op = "+" if level == 1 or rng.random() < 0.5 else "-"
        if level == 1:  # like denominators, nothing to simplify
            d = r(3, 9)
            x, y = Fraction(r(1, d - 1), d), Fraction(r(1, d - 1), d)
            ok = x.denominator == y.denominator == d and (x + y).denominator == d and x + y < 1
        elif level == 2:  # like denominators, the result simplifies or exceeds 1
            d = r(3, 12)
            x, y = Fraction(r(1, d - 1), d), Fraction(r(1, d - 1), d)
            res = x + y if op == "+" else x - y
            ok = x.denominator == y.denominator == d and res > 0 and (res.denominator != d or res >= 1)
        elif level == 3:  # one denominator a multiple of the other
            d1 = r(2, 6)
            d2 = d1 * r(2, 3)
            x, y = Fraction(r(1, d1 - 1), d1), Fraction(r(1, d2 - 1), d2)
            ok = x.denominator == d1 and y.denominator == d2
        else:  # unrelated denominators; level 5 with mixed numbers
            d1, d2 = r(2, 9), r(2, 9)
            x, y = Fraction(r(1, d1 - 1), d1), Fraction(r(1, d2 - 1), d2)
            if level == 5:
                x, y = x + r(1, 4), y + r(1, 3)
            # Neither denominator divides the other: level 3's easier case stays out.
            ok = x.denominator == d1 and y.denominator == d2 and d1 % d2 != 0 and d2 % d1 != 0
        if op == "-" and x < y:
            x, y = y, x
        res = x + y if op == "+" else x - y
        if ok and res > 0:
            break
    mixed = level == 5
    expr = f"{_fraction_text(x, mixed)} {op} {_fraction_text(y, mixed)}"
    common = x.denominator * y.denominator // gcd(x.denominator, y.denominator)
    xn, yn = x.numerator * (common // x.denominator), y.numerator * (common // y.denominator)
    steps = []
    if mixed:
        steps.append(f"As improper fractions: {_fraction_text(x)} {op} {_fraction_text(y)}.")
    if x.denominator != y.denominator:
        steps.append(f"Common denominator {common}: {xn}/{common} {op} {yn}/{common}.")
    raw = xn + yn if op == "+" else xn - yn
    steps.append(f"{xn}/{common} {op} {yn}/{common} = {raw}/{common}.")
    if gcd(raw, common) > 1:
        steps.append(f"Simplify: {raw}/{common} = {_frac(res)}.")
    return Problem(_ask(expr) + _FRACTION_NOTE, _frac(res), _solution(steps, _frac(res)))


# --- 10. decimals -------------------------------------------------------------------------------------


def _dec(rng: random.Random, whole_max: int, places: int) -> Fraction:
    """A decimal with exactly `places` places (last digit non-zero so the places are real)."""
    while True:
        v = Fraction(rng.randint(1, whole_max * 10**places + 10**places - 1), 10**places)
        if (v * 10**places) % 10:
            return v


def decimals(rng: random.Random, level: int) -> Problem:
    f = format_number
    if level >= 4:  # level 4: hundredths × a whole number; level 5: tenths × tenths
        x = _dec(rng, 9, 2) if level == 4 else _dec(rng, 9, 1)
        y = Fraction(rng.randint(2, 9)) if level == 4 else _dec(rng, 4, 1)
        scale_x, scale_y = (100, 1) if level == 4 else (10, 10)
        ix, iy, res = int(x * scale_x), int(y * scale_y), x * y
        steps = [
            f"Multiply without the decimal points: {ix} × {iy} = {ix * iy}.",
            f"Put back 2 decimal places: {ix * iy} ÷ 100 = {f(res)}.",
        ]
        return Problem(_ask(f"{f(x)} × {f(y)}"), f(res), _solution(steps, f(res)))
    while True:
        if level == 1:  # tenths that stay below 1
            x, y, op = Fraction(rng.randint(1, 8), 10), Fraction(rng.randint(1, 8), 10), "+"
        else:  # level 2: tenths; level 3: hundredths with tenths
            x, y, op = _dec(rng, 20, level - 1), _dec(rng, 20, 1), rng.choice("+-")
        if op == "-" and x < y:
            x, y = y, x
        res = x + y if op == "+" else x - y
        if res > 0 and (level != 1 or res < 1):
            break
    unit, scale = ("tenths", 10) if level <= 2 else ("hundredths", 100)
    steps = [
        f"Count in {unit}: {x * scale} {op} {y * scale} = {res * scale} {unit}.",
        f"So {f(x)} {op} {f(y)} = {f(res)}.",
    ]
    return Problem(_ask(f"{f(x)} {op} {f(y)}"), f(res), _solution(steps, f(res)))


# --- 11. percentages ----------------------------------------------------------------------------------


def percentages(rng: random.Random, level: int) -> Problem:
    r = rng.randint
    if level <= 3:
        if level == 1:
            p, x = rng.choice((10, 50)), 10 * r(1, 20)
        elif level == 2:
            p = rng.choice((20, 25, 75))
            x = (100 // gcd(p, 100)) * r(1, 12)
        else:
            p = rng.choice([q for q in range(5, 100, 5) if q not in (10, 20, 25, 50, 75)])
            x = 20 * r(1, 15)
        v = p * x // 100
        steps = [f"{p}% of {x} = {x} × {p} ÷ 100 = {x * p} ÷ 100 = {v}."]
        return Problem(_ask(f"{p}% of {x}"), str(v), _solution(steps, str(v)))
    if level == 4:
        price, p = 20 * r(1, 15), 5 * r(1, 12)
        change = price * p // 100
        up = rng.random() < 0.5
        new = price + change if up else price - change
        word = "raised" if up else "reduced"
        prompt = f"A jacket costs ${price}. Its price is {word} by {p}%. What is the new price in dollars?"
        steps = [
            f"{p}% of {price} = {price} × {p} ÷ 100 = {change}.",
            f"{price} {'+' if up else '-'} {change} = {new}.",
        ]
        return Problem(prompt, str(new), _solution(steps, str(new)))
    p = r(1, 99)
    x = (100 // gcd(p, 100)) * r(1, 4)
    y = p * x // 100
    prompt = f"What percent of {x} is {y}?"
    share = format_number(Fraction(y, x))
    steps = [f"{y} ÷ {x} = {share}.", f"As a percent: {share} × 100 = {p}."]
    return Problem(prompt, str(p), _solution(steps, str(p)))


# --- 12. ratios and rates -----------------------------------------------------------------------------

_THINGS = (
    ("pencil", "pencils"),
    ("apple", "apples"),
    ("notebook", "notebooks"),
    ("ticket", "tickets"),
    ("book", "books"),
    ("cupcake", "cupcakes"),
    ("marker", "markers"),
    ("plant", "plants"),
)
_NAMES = (
    ("Mia", "she"),
    ("Tom", "he"),
    ("Ava", "she"),
    ("Leo", "he"),
    ("Zoe", "she"),
    ("Sam", "he"),
    ("Lily", "she"),
    ("Ben", "he"),
    ("Nora", "she"),
    ("Omar", "he"),
    ("Ella", "she"),
    ("Raj", "he"),
)


def ratios_rates(rng: random.Random, level: int) -> Problem:
    r = rng.randint
    one, many = rng.choice(_THINGS)
    if level in (1, 2):
        n, u = r(2, 9), r(2, 12)
        if level == 1:
            prompt = f"{n} {many} cost ${n * u}. How many dollars does one {one} cost?"
            steps, v = [f"{n * u} ÷ {n} = {u}."], u
        else:
            m = r(2, 12)
            while m == n:
                m = r(2, 12)
            prompt = f"{n} {many} cost ${n * u}. How many dollars do {m} {many} cost?"
            v = m * u
            steps = [f"One {one} costs {n * u} ÷ {n} = {u}.", f"{m} {many} cost {m} × {u} = {v}."]
    elif level == 3:
        s, t, t2 = 5 * r(4, 18), r(2, 6), r(2, 9)
        while t2 == t:
            t2 = r(2, 9)
        prompt = (
            f"A train travels {s * t} km in {t} hours at a constant speed. How many km does it travel in {t2} hours?"
        )
        v = s * t2
        steps = [f"Speed: {s * t} ÷ {t} = {s} km per hour.", f"In {t2} hours: {s} × {t2} = {v}."]
    elif level == 4:
        (a, _), (b, _) = rng.sample(_NAMES, 2)
        p, q, k = r(1, 6), r(2, 7), r(2, 9)
        while gcd(p, q) > 1:  # a ratio in lowest terms
            p, q = r(1, 6), r(2, 7)
        total = k * (p + q)
        prompt = f"{a} and {b} share {total} {many} in the ratio {p}:{q}. How many {many} does {b} get?"
        v = k * q
        steps = [
            f"There are {p} + {q} = {p + q} parts.",
            f"One part is {total} ÷ {p + q} = {k}.",
            f"{b} gets {q} × {k} = {v}.",
        ]
    else:
        p, k = r(1, 6), r(2, 9)
        q = p + r(1, 4)
        while gcd(p, q) > 1:
            p = r(1, 6)
            q = p + r(1, 4)
        diff = k * (q - p)
        prompt = (
            f"In a box the ratio of red to blue {many} is {p}:{q}. There are {diff} more blue {many} "
            f"than red {many}. How many {many} are in the box?"
        )
        v = k * (p + q)
        steps = [
            f"The difference is {q} - {p} = {q - p} parts, so one part is {diff} ÷ {q - p} = {k}.",
            f"The box holds {p} + {q} = {p + q} parts: {p + q} × {k} = {v}.",
        ]
    return Problem(prompt, str(v), _solution(steps, str(v)))


# --- 13./14. word problems ----------------------------------------------------------------------------

# Operand ranges per level for the one-step problems: (add/sub range, mul factors, div (divisor, quotient)).
_WORD_SIZES = {
    1: ((1, 9), ((2, 5), (2, 5)), ((2, 5), (2, 5))),
    2: ((5, 20), ((2, 9), (2, 9)), ((2, 9), (2, 9))),
    3: ((10, 99), ((10, 99), (2, 9)), ((2, 9), (10, 30))),
    4: ((100, 999), ((100, 999), (2, 9)), ((2, 9), (30, 150))),
    5: ((1000, 9999), ((10, 99), (10, 99)), ((11, 25), (10, 99))),
}


def word_one_step(rng: random.Random, level: int) -> Problem:
    name, he = rng.choice(_NAMES)
    _, things = rng.choice(_THINGS)
    (lo, hi), (fa, fb), (dd, dq) = _WORD_SIZES[level]
    op = rng.choice("+-×÷")
    if op == "+":
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        prompt = f"{name} has {a} {things}. {he.capitalize()} gets {b} more. How many {things} does {name} have now?"
        v, step = a + b, f"{a} + {b} = {a + b}."
    elif op == "-":
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        while a <= b:  # keep something left
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        prompt = f"{name} had {a} {things} and gave {b} of them to a friend. How many {things} does {name} have left?"
        v, step = a - b, f"{a} - {b} = {a - b}."
    elif op == "×":
        a, b = rng.randint(*fa), rng.randint(*fb)
        prompt = f"{name} buys {a} boxes with {b} {things} in each box. How many {things} does {name} buy?"
        v, step = a * b, f"{a} × {b} = {a * b}."
    else:
        d, q = rng.randint(*dd), rng.randint(*dq)
        prompt = f"{name} shares {d * q} {things} equally among {d} friends. How many {things} does each friend get?"
        v, step = q, f"{d * q} ÷ {d} = {q}."
    return Problem(prompt, str(v), _solution([step], str(v)))


def word_two_step(rng: random.Random, level: int) -> Problem:
    name, he = rng.choice(_NAMES)
    _, things = rng.choice(_THINGS)
    He = he.capitalize()
    small, big = {1: (2, 5), 2: (2, 9), 3: (3, 12), 4: (6, 25), 5: (3, 12)}[level]
    r = rng.randint
    kind = rng.randrange(3) if level < 5 else 3 + rng.randrange(2)
    if kind == 0:  # a × b − c
        a, b = r(small, big), r(small, big)
        c = r(1, a * b - 1)
        prompt = (
            f"{name} buys {a} packs of {things} with {b} in each pack. {He} gives away {c} {things}. "
            f"How many {things} does {name} have left?"
        )
        v = a * b - c
        steps = [f"{a} × {b} = {a * b}.", f"{a * b} - {c} = {v}."]
    elif kind == 1:  # a + b × c
        a, b, c = r(small, big * 2), r(small, big), r(small, big)
        prompt = (
            f"{name} has {a} {things}. {He} buys {b} bags with {c} {things} in each bag. "
            f"How many {things} does {name} have now?"
        )
        v = a + b * c
        steps = [f"{b} × {c} = {b * c}.", f"{a} + {b * c} = {v}."]
    elif kind == 2:  # a ÷ b − c
        b, q = r(small, big), r(small + 1, big + 2)
        c = r(1, q - 1)
        prompt = (
            f"{b * q} {things} are shared equally by {b} children. Each child then loses {c} of them. "
            f"How many {things} does each child have now?"
        )
        v = q - c
        steps = [f"{b * q} ÷ {b} = {q}.", f"{q} - {c} = {v}."]
    elif kind == 3:  # a × b + c × d (three steps)
        a, b, c, d = r(small, big), r(small, big), r(small, big), r(small, big)
        prompt = (
            f"{name} buys {a} boxes of {b} red {things} and {c} boxes of {d} blue {things}. "
            f"How many {things} does {name} buy in all?"
        )
        v = a * b + c * d
        steps = [f"Red: {a} × {b} = {a * b}.", f"Blue: {c} × {d} = {c * d}.", f"{a * b} + {c * d} = {v}."]
    else:  # (a × b + c) ÷ d (three steps)
        while True:
            d, q, a = r(small, big), r(small, big), r(2, 6)
            if d * q > a + 1:
                break
        b = r(1, (d * q - 1) // a)
        c = d * q - a * b
        prompt = (
            f"{name} has {a} bags with {b} {things} in each bag and {c} loose {things}. "
            f"{He} shares all of them equally among {d} friends. How many {things} does each friend get?"
        )
        v = q
        steps = [f"{a} × {b} = {a * b}.", f"{a * b} + {c} = {d * q}.", f"{d * q} ÷ {d} = {v}."]
    return Problem(prompt, str(v), _solution(steps, str(v)))


# --- the module table ---------------------------------------------------------------------------------


def _m(id: str, title: str, description: str, tier: int, prereqs: tuple[str, ...]) -> Module:
    return Module(id=id, title=title, description=description, tier=tier, prerequisites=prereqs)


# Declared prerequisites: what a pupil must already do to learn the module (tier = longest path + 1).
MODULES: tuple[tuple[Module, Generator], ...] = (
    (_m("single_digit_add", "Single-digit addition facts", "a + b with one-digit numbers", 1, ()), single_digit_add),
    (
        _m("single_digit_sub", "Subtraction facts within 20", "a - b within 20, across ten", 2, ("single_digit_add",)),
        single_digit_sub,
    ),
    (
        _m(
            "multi_digit_add",
            "Multi-digit addition with carrying",
            "column addition with carries",
            2,
            ("single_digit_add",),
        ),
        multi_digit_add,
    ),
    (_m("times_tables", "Multiplication tables", "products up to 12 × 12", 2, ("single_digit_add",)), times_tables),
    (
        _m(
            "multi_digit_sub",
            "Multi-digit subtraction with borrowing",
            "column subtraction with borrows",
            3,
            ("single_digit_sub", "multi_digit_add"),
        ),
        multi_digit_sub,
    ),
    (
        _m(
            "multi_digit_mul",
            "Multi-digit multiplication",
            "products by place-value parts",
            3,
            ("times_tables", "multi_digit_add"),
        ),
        multi_digit_mul,
    ),
    (
        _m(
            "division",
            "Exact division",
            "division facts and long division without remainder",
            4,
            ("times_tables", "multi_digit_sub"),
        ),
        division,
    ),
    (
        _m(
            "decimals",
            "Decimal arithmetic",
            "adding, subtracting and multiplying decimals",
            4,
            ("multi_digit_add", "multi_digit_sub", "multi_digit_mul"),
        ),
        decimals,
    ),
    (
        _m(
            "order_of_operations",
            "Order of operations",
            "× and ÷ before + and -, brackets first",
            5,
            ("multi_digit_add", "multi_digit_sub", "times_tables", "division"),
        ),
        order_of_operations,
    ),
    (
        _m(
            "fractions",
            "Adding and subtracting fractions",
            "common denominators, lowest terms",
            5,
            ("times_tables", "division"),
        ),
        fractions,
    ),
    (
        _m(
            "word_one_step",
            "One-step word problems",
            "pick the one operation a story needs",
            5,
            ("multi_digit_add", "multi_digit_sub", "multi_digit_mul", "division"),
        ),
        word_one_step,
    ),
    (
        _m(
            "percentages",
            "Percentages",
            "percent of a number, percent change, what percent",
            6,
            ("fractions", "decimals", "multi_digit_mul"),
        ),
        percentages,
    ),
    (
        _m(
            "ratios_rates",
            "Ratios and rates",
            "unit rates, scaling, sharing in a ratio",
            6,
            ("division", "multi_digit_mul", "fractions"),
        ),
        ratios_rates,
    ),
    (
        _m(
            "word_two_step",
            "Two-step word problems",
            "chain two or three operations from a story",
            6,
            ("word_one_step", "order_of_operations"),
        ),
        word_two_step,
    ),
)


class ArithmeticDomain:
    """Procedural arithmetic: unlimited fresh items with exact answers."""

    name = "arithmetic"
    levels = LEVELS

    def __init__(self) -> None:
        self._modules = {m.id: m for m, _ in MODULES}
        self._generators = {m.id: g for m, g in MODULES}

    def modules(self) -> list[Module]:
        return list(self._modules.values())

    def module(self, module_id: str) -> Module:
        if module_id not in self._modules:
            raise DomainError(f"unknown arithmetic module {module_id!r}", f"use one of: {', '.join(self._modules)}")
        return self._modules[module_id]

    def generate(self, module: str, level: int, rng: random.Random) -> Problem:
        """One problem (any split): for teachers' examples and tests."""
        self.module(module)
        if not 1 <= level <= LEVELS:
            raise DomainError(f"level {level} is out of range", f"use a level from 1 to {LEVELS}")
        return self._generators[module](rng, level)

    def _stream(self, module: str, level: int, split: Split, seed: int) -> Iterator[Item]:
        """Distinct items of one (module, level) in one split, in a fixed order for the seed."""
        # A string seed is hashed with SHA-512 by `random`, so streams are stable across runs and platforms.
        rng = random.Random(f"ioa-arithmetic|{module}|{level}|{split}|{seed}")
        gen, seen, misses = self._generators[module], set(), 0
        while misses < _MAX_MISSES:
            p = gen(rng, level)
            if p.prompt in seen or split_of(p.prompt) != split:
                misses += 1
                continue
            misses = 0
            seen.add(p.prompt)
            digest = hashlib.sha256(p.prompt.encode()).hexdigest()[:12]
            yield Item(
                id=f"{module}-{digest}",
                module=module,
                prompt=p.prompt,
                answer=p.answer,
                level=level,
                solution=p.solution,
                meta={"split": split},
            )

    def items(self, module: str, n: int, seed: int, split: Split = "probe", level: int | None = None) -> list[Item]:
        self.module(module)
        check_item_request(self.name, module, [m.id for m in self.modules()], n, split, level, LEVELS)
        return spread_over_levels(
            {lv: self._stream(module, lv, split, seed) for lv in ([level] if level else range(1, LEVELS + 1))}, n
        )

    def messages(self, item: Item) -> list[Message]:
        return [{"role": "system", "content": SOLVE_SYSTEM_PROMPT}, {"role": "user", "content": item.prompt}]

    def check(self, item: Item, response: str) -> bool:
        return check_response(response, item.answer)


def spread_over_levels(streams: dict[int, Iterator[Item]], n: int) -> list[Item]:
    """n items spread evenly over the levels' streams; a level that runs dry is made up by the others."""
    quota = {lv: n // len(streams) + (i < n % len(streams)) for i, lv in enumerate(streams)}
    taken: dict[int, list[Item]] = {lv: [] for lv in streams}
    prompts: set[str] = set()
    live = dict(streams)

    def take(lv: int) -> bool:
        for item in live[lv]:
            if item.prompt not in prompts:  # the same prompt can come up at two levels
                prompts.add(item.prompt)
                taken[lv].append(item)
                return True
        del live[lv]
        return False

    for lv in streams:
        while len(taken[lv]) < quota[lv] and take(lv):
            pass
    while sum(map(len, taken.values())) < n and live:
        for lv in list(live):
            if sum(map(len, taken.values())) < n:
                take(lv)
    return [item for lv in streams for item in taken[lv]]

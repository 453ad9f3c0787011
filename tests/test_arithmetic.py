"""The arithmetic domain: exact answers (recomputed independently from the prompt), disjoint splits,
determinism, levels, and a real prerequisite DAG."""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction
from graphlib import TopologicalSorter

import pytest

from ioa.config import DomainConfig
from ioa.domains import ArithmeticDomain, Domain, get_domain
from ioa.domains.arithmetic import LEVELS, split_of
from ioa.errors import DomainError

DOMAIN = ArithmeticDomain()
MODULE_IDS = [m.id for m in DOMAIN.modules()]
SPLITS = ("probe", "gate", "train", "benchmark")

# --- an independent solver: evaluates the prompt's arithmetic with exact fractions --------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return Fraction(node.value)
    raise ValueError(f"unexpected syntax {ast.dump(node)}")


def evaluate(expr: str) -> Fraction:
    """Exact value of an expression written with ×, ÷, fractions a/b and mixed numbers 'w a/b'."""
    expr = re.sub(r"(\d+) (\d+)/(\d+)", r"('\1' + '\2' / '\3')", expr)  # mixed number: w + a/b
    expr = re.sub(r"(?<!['\d.])(\d+(?:\.\d+)?)(?!['\d.])", r"'\1'", expr)  # every number as an exact literal
    expr = expr.replace("×", "*").replace("÷", "/")
    return _eval(ast.parse(expr, mode="eval"))


def _n(*groups: str) -> list[Fraction]:
    return [Fraction(g) for g in groups]


# (pattern, solver from the matched numbers) for every prompt shape that is not a bare expression.
_WORDED = [
    (r"^What is (\d+)% of (\d+)\?$", lambda p, x: p * x / 100),
    (r"^What percent of (\d+) is (\d+)\?$", lambda x, y: 100 * y / x),
    (r"costs \$(\d+)\. Its price is raised by (\d+)%", lambda x, p: x * (1 + p / 100)),
    (r"costs \$(\d+)\. Its price is reduced by (\d+)%", lambda x, p: x * (1 - p / 100)),
    (r"^(\d+) \w+ cost \$(\d+)\. How many dollars does one", lambda n, c: c / n),
    (r"^(\d+) \w+ cost \$(\d+)\. How many dollars do (\d+)", lambda n, c, m: c / n * m),
    (r"travels (\d+) km in (\d+) hours .* in (\d+) hours\?", lambda d, t, t2: d / t * t2),
    (r"share (\d+) \w+ in the ratio (\d+):(\d+)\. How many \w+ does \w+ get", lambda s, p, q: s * q / (p + q)),
    (r"is (\d+):(\d+)\. There are (\d+) more blue", lambda p, q, d: d / (q - p) * (p + q)),
    (r"has (\d+) \w+\. \w+ gets (\d+) more\.", lambda a, b: a + b),
    (r"had (\d+) \w+ and gave (\d+) of them", lambda a, b: a - b),
    (r"buys (\d+) boxes with (\d+) \w+ in each box", lambda a, b: a * b),
    (r"^\w+ shares (\d+) \w+ equally among (\d+) friends", lambda a, b: a / b),
    (r"buys (\d+) packs of \w+ with (\d+) in each pack\. \w+ gives away (\d+)", lambda a, b, c: a * b - c),
    (r"has (\d+) \w+\. \w+ buys (\d+) bags with (\d+) \w+ in each bag", lambda a, b, c: a + b * c),
    (r"^(\d+) \w+ are shared equally by (\d+) children\. Each child then loses (\d+)", lambda a, b, c: a / b - c),
    (r"buys (\d+) boxes of (\d+) red \w+ and (\d+) boxes of (\d+) blue", lambda a, b, c, d: a * b + c * d),
    (r"has (\d+) bags with (\d+) \w+ in each bag and (\d+) loose \w+\. \w+ shares all of them equally among (\d+)",
     lambda a, b, c, d: (a * b + c) / d),
]  # fmt: skip


def solve(prompt: str) -> Fraction:
    """The answer to a generated prompt, computed without the generator's code."""
    bare = re.fullmatch(r"What is ([\d\s+\-×÷/().]+)\?( Give the answer as a fraction in lowest terms\.)?", prompt)
    if bare:
        return evaluate(bare.group(1))
    matches = [(pattern, f) for pattern, f in _WORDED if re.search(pattern, prompt)]
    assert len(matches) == 1, f"no unique solver for {prompt!r}"
    pattern, f = matches[0]
    return f(*_n(*re.search(pattern, prompt).groups()))


def test_solver_is_a_real_solver() -> None:
    assert solve("What is 3 + 4 × 5?") == 23
    assert solve("What is (8 + 3) × 8 - 12 ÷ (6 - 4)?") == 82
    assert solve("What is 3 1/4 - 2 1/3? Give the answer as a fraction in lowest terms.") == Fraction(11, 12)
    assert solve("What is 4.5 × 1.2?") == Fraction("5.4")


# --- structure ----------------------------------------------------------------------------------------


def test_is_a_domain_with_12_to_14_snake_case_modules() -> None:
    assert isinstance(DOMAIN, Domain)
    assert DOMAIN.levels == LEVELS == 5
    assert 12 <= len(MODULE_IDS) <= 14
    assert len(set(MODULE_IDS)) == len(MODULE_IDS)
    for module in DOMAIN.modules():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", module.id), module.id
        assert module.title and module.title[0].isupper() and module.title != module.id


def test_prerequisites_form_a_dag_of_known_modules_with_rising_tiers() -> None:
    by_id = {m.id: m for m in DOMAIN.modules()}
    for module in by_id.values():
        for pre in module.prerequisites:
            assert pre in by_id, f"{module.id} needs unknown {pre}"
            assert by_id[pre].tier < module.tier, f"{pre} (tier {by_id[pre].tier}) → {module.id}"
    order = list(TopologicalSorter({m.id: set(m.prerequisites) for m in by_id.values()}).static_order())
    assert len(order) == len(by_id)  # static_order raises CycleError on a cycle
    roots = [m.id for m in by_id.values() if not m.prerequisites]
    assert roots == ["single_digit_add"]
    # A real structure, not a chain or a star: some module has two or more prerequisites.
    assert max(len(m.prerequisites) for m in by_id.values()) >= 2
    assert "division" in by_id["fractions"].prerequisites
    assert "word_one_step" in by_id["word_two_step"].prerequisites


# --- answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULE_IDS)
def test_answers_are_exact_and_the_solution_passes_the_checker(module: str) -> None:
    for level in range(1, LEVELS + 1):
        items = DOMAIN.items(module, 25, seed=7, split="train", level=level)
        assert items, f"{module} level {level} yields nothing"
        for item in items:
            expected = solve(item.prompt)
            assert Fraction(item.answer) == expected, item.prompt
            assert expected >= 0
            assert item.solution.endswith(f"#### {item.answer}")
            assert DOMAIN.check(item, item.solution)
            assert not DOMAIN.check(item, f"#### {Fraction(item.answer) + 1}")


def test_answers_are_canonical_strings() -> None:
    for module in MODULE_IDS:
        for item in DOMAIN.items(module, 30, seed=3, split="probe"):
            assert re.fullmatch(r"-?\d+(\.\d*[1-9])?|-?\d+/\d+", item.answer), item.answer
            if "/" in item.answer:
                value = Fraction(item.answer)
                assert item.answer == f"{value.numerator}/{value.denominator}"  # lowest terms


def test_check_uses_the_robust_extractor() -> None:
    item = next(i for i in DOMAIN.items("fractions", 20, seed=0, split="probe") if "/" in i.answer)
    num, den = item.answer.split("/")
    assert DOMAIN.check(item, f"So the sum is \\boxed{{\\frac{{{num}}}{{{den}}}}}.")
    assert DOMAIN.check(item, f"The answer is {Fraction(item.answer) * 1}.")
    assert not DOMAIN.check(item, "I do not know.")


# --- splits, determinism, levels ----------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULE_IDS)
def test_splits_never_share_a_prompt(module: str) -> None:
    prompts = {s: set() for s in SPLITS}
    for split in SPLITS:
        for seed in (0, 1):
            items = DOMAIN.items(module, 100, seed=seed, split=split)
            assert all(split_of(i.prompt) == split for i in items)
            prompts[split] |= {i.prompt for i in items}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not prompts[a] & prompts[b], f"{module}: {a} and {b} share prompts"


def test_same_arguments_same_items_and_seeds_differ() -> None:
    a = DOMAIN.items("multi_digit_mul", 40, seed=11, split="gate")
    b = DOMAIN.items("multi_digit_mul", 40, seed=11, split="gate")
    c = DOMAIN.items("multi_digit_mul", 40, seed=12, split="gate")
    assert a == b and [i.id for i in a] == [i.id for i in b]
    assert len({i.prompt for i in a} & {i.prompt for i in c}) < 10


def test_no_duplicates_within_a_call_even_for_small_pools() -> None:
    for module in MODULE_IDS:
        items = DOMAIN.items(module, 150, seed=0, split="probe")
        assert len({i.prompt for i in items}) == len(items)
        assert len({i.id for i in items}) == len(items)
    # Level 1 of the single-digit facts holds only 36 prompts over four splits: fewer, never repeats.
    tiny = DOMAIN.items("single_digit_add", 50, seed=0, split="probe", level=1)
    assert 0 < len(tiny) < 36
    assert len({i.prompt for i in tiny}) == len(tiny)


def test_level_is_respected_and_none_spreads_evenly() -> None:
    for level in range(1, LEVELS + 1):
        assert {i.level for i in DOMAIN.items("order_of_operations", 10, 0, "probe", level)} == {level}
    spread = DOMAIN.items("multi_digit_add", 50, seed=0, split="probe")
    assert len(spread) == 50
    assert [sum(i.level == lv for i in spread) for lv in range(1, 6)] == [10, 10, 10, 10, 10]
    # A level that runs dry (times tables level 1 has 25 prompts) is made up by the other levels.
    assert len(DOMAIN.items("times_tables", 50, seed=0, split="probe")) == 50


@pytest.mark.parametrize("module", ["multi_digit_add", "multi_digit_sub", "multi_digit_mul", "division"])
def test_levels_grow_in_size(module: str) -> None:
    def digits(level: int) -> float:
        """Mean number of digits written in the prompts: the size a pupil has to handle."""
        items = DOMAIN.items(module, 30, seed=0, split="train", level=level)
        return sum(len("".join(re.findall(r"\d", i.prompt))) for i in items) / len(items)

    sizes = [digits(level) for level in range(1, LEVELS + 1)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0] + 1, sizes


def test_messages_ask_step_by_step_for_a_hash_line() -> None:
    item = DOMAIN.items("decimals", 1, seed=0)[0]
    messages = DOMAIN.messages(item)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "step by step" in messages[0]["content"] and "####" in messages[0]["content"]
    assert messages[1]["content"] == item.prompt


def test_bad_arguments_are_domain_errors_with_a_fix() -> None:
    with pytest.raises(DomainError, match=r"unknown arithmetic module 'addition'.*single_digit_add"):
        DOMAIN.items("addition", 5, seed=0)
    with pytest.raises(DomainError, match="level 6 is out of range"):
        DOMAIN.items("division", 5, seed=0, level=6)
    with pytest.raises(DomainError, match="unknown split 'test'"):
        DOMAIN.items("division", 5, seed=0, split="test")  # type: ignore[arg-type]


def test_get_domain() -> None:
    assert isinstance(get_domain(DomainConfig(name="arithmetic")), ArithmeticDomain)
    assert isinstance(get_domain(DomainConfig(name="Arithmetic")), ArithmeticDomain)
    with pytest.raises(DomainError, match=r"unknown domain 'algebra'.*arithmetic, gsm8k"):
        get_domain(DomainConfig(name="algebra"))
    with pytest.raises(DomainError, match="takes no options"):
        get_domain(DomainConfig(name="arithmetic", options={"levles": 3}))

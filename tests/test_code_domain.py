"""The code domain on HumanEval: loading and tagging, splits, reply shapes, sandboxed checking, pass@k, CLI."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ioa.cli import app
from ioa.config import DomainConfig
from ioa.domains import DOMAINS, CodeDomain, Domain, get_domain
from ioa.domains.base import Item
from ioa.domains.code import (
    LEVELS,
    MODULES,
    assemble_program,
    extract_code,
    load_problems,
    mean_pass_at_k,
    pass_at_k,
    split_of,
)
from ioa.errors import DataError, DomainError
from ioa.models import resolve
from ioa.models.base import ChatRequest, Generation

runner = CliRunner()


@pytest.fixture(scope="module")
def domain() -> CodeDomain:
    return CodeDomain()


def by_entry(domain: CodeDomain, entry_point: str) -> tuple[Item, str]:
    """A benchmark item and its canonical solution (prompt + body)."""
    item = next(i for i in domain.benchmark_items() if i.meta["entry_point"] == entry_point)
    return item, item.solution


# --- loading, tagging, levels, splits --------------------------------------------------------------------------


def test_humaneval_loads_and_every_problem_is_tagged(domain: CodeDomain) -> None:
    assert isinstance(domain, Domain)
    assert "code" in DOMAINS and isinstance(get_domain(DomainConfig(name="code")), CodeDomain)
    assert len(domain.problems) == 164
    ids = [m.id for m in domain.modules()]
    counts = Counter(p.module for p in domain.problems)
    assert set(counts) == set(ids)  # every module non-empty, no problem outside the modules
    assert sum(counts.values()) == 164
    assert {p.level for p in domain.problems} == set(range(1, LEVELS + 1))
    assert min(Counter(p.level for p in domain.problems).values()) >= 25  # quintile thresholds: ~33 each
    assert [p.task_id for p in domain.problems] == [f"HumanEval/{i}" for i in range(164)]


def test_declared_prerequisites_form_a_dag() -> None:
    ids = {m.id for m in MODULES}
    for m in MODULES:
        assert set(m.prerequisites) <= ids
        assert all(next(p for p in MODULES if p.id == pre).tier < m.tier for pre in m.prerequisites)
    TopologicalSorter({m.id: m.prerequisites for m in MODULES}).static_order()


def test_tagging_examples(domain: CodeDomain) -> None:
    module = {p.entry_point: p.module for p in domain.problems}
    assert module["fib"] == "recursion"
    assert module["separate_paren_groups"] == "parsing"
    assert module["sort_third"] == "sorting"
    assert module["histogram"] == "dicts"
    assert module["is_prime"] == "math"
    assert module["flip_case"] == "strings"
    assert module["incr_list"] == "lists"
    level = {p.entry_point: p.level for p in domain.problems}
    assert level["strlen"] == 1 and level["separate_paren_groups"] == 5


def test_items_shape(domain: CodeDomain) -> None:
    item = domain.benchmark_items(1)[0]
    assert item.id == "humaneval-0" and item.answer == ""
    assert item.prompt.startswith("from typing import List") and "def has_close_elements(" in item.prompt
    assert item.meta["entry_point"] == "has_close_elements" and "def check(candidate)" in item.meta["tests"]
    assert item.meta["split"] == "benchmark" and item.meta["overlaps_benchmark"] == "true"


def test_benchmark_is_humaneval_in_order(domain: CodeDomain) -> None:
    assert [i.meta["task_id"] for i in domain.benchmark_items(40)] == [f"HumanEval/{i}" for i in range(40)]
    assert len(domain.benchmark_items()) == 164
    for module in domain.modules():
        every = domain.items(module.id, 1000, seed=0, split="benchmark")
        assert every == domain.items(module.id, 1000, seed=7, split="benchmark")  # the seed does not matter
        assert [int(i.meta["task_id"].split("/")[1]) for i in every] == sorted(
            int(i.meta["task_id"].split("/")[1]) for i in every
        )
        assert domain.items(module.id, 2, seed=0, split="benchmark") == every[:2]
    assert sum(len(domain.items(m.id, 1000, 0, "benchmark")) for m in MODULES) == 164


def test_training_splits_partition_humaneval(domain: CodeDomain) -> None:
    seen: dict[str, str] = {}
    for split in ("probe", "gate", "train"):
        for module in domain.modules():
            items = domain.items(module.id, 1000, seed=3, split=split)  # type: ignore[arg-type]
            for item in items:
                assert item.module == module.id and split_of(item.meta["task_id"]) == split
                assert seen.setdefault(item.id, split) == split
    assert len(seen) == 164
    a = domain.items("math", 5, seed=1, split="probe")
    assert a == domain.items("math", 5, seed=1, split="probe") and len(a) == 5
    every = {i.id for i in domain.items("math", 100, seed=1, split="probe")}
    assert every == {i.id for i in domain.items("math", 100, seed=2, split="probe")}  # a seed only reorders
    assert all(i.level == 3 for i in domain.items("math", 100, 0, "train", level=3))


def test_item_errors(domain: CodeDomain) -> None:
    with pytest.raises(DomainError, match="unknown code module"):
        domain.items("algebra", 1, 0)
    with pytest.raises(DomainError, match="unknown split"):
        domain.items("math", 1, 0, split="test")  # type: ignore[arg-type]
    with pytest.raises(DomainError, match="out of range"):
        domain.items("math", 1, 0, level=6)
    with pytest.raises(DomainError, match="cannot ask"):
        domain.items("math", -1, 0)


def test_a_user_given_file_and_its_errors(domain: CodeDomain, tmp_path: Path) -> None:
    rows = [
        {k: getattr(p, k) for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
        for p in domain.problems[:2]
    ]
    good = tmp_path / "mini.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mini = get_domain(DomainConfig(name="code", data_path=good))
    assert isinstance(mini, CodeDomain) and len(mini.problems) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2"):
        load_problems(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({**rows[0], "entry_point": ""}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        load_problems(missing)
    with pytest.raises(DomainError, match="does not exist"):
        CodeDomain(tmp_path / "nope.jsonl")


def test_messages_ask_for_a_python_block(domain: CodeDomain) -> None:
    item = domain.benchmark_items(1)[0]
    system, user = domain.messages(item)
    assert system["role"] == "system" and "```python" in system["content"]
    assert user["role"] == "user" and item.prompt.rstrip() in user["content"]


# --- reply shapes -------------------------------------------------------------------------------------------

PROMPT = 'from typing import List\n\n\ndef double(xs: List[int]) -> List[int]:\n    """ Double every element. """\n'
TESTS = "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n    assert candidate([]) == []\n"


def program_of(reply: str) -> str:
    return assemble_program(PROMPT, extract_code(reply, "double"), "double")


def passes(program: str) -> bool:
    from ioa.sandbox import SandboxLimits, run_tests

    return run_tests(program, TESTS, "double", SandboxLimits(timeout_s=10)).status == "pass"


REPLIES = {
    # The teacher's usual shape: prose, a fenced full function, prose; typing import dropped.
    "fenced with prose": "Here is the completed function:\n\n```python\ndef double(xs: List[int]) -> List[int]:\n"
    "    return [2 * x for x in xs]\n```\n\nThis uses a list comprehension to double each element.",
    # Function first, then a usage example in its own block: the function is what counts.
    "function then example": "```python\ndef double(xs):\n    return [x * 2 for x in xs]\n```\n\nExample:\n"
    "```python\nprint(double([1, 2]))  # [2, 4]\n```",
    # Two attempts: the last definition is the answer.
    "two attempts": "```python\ndef double(xs):\n    return xs\n```\nOops, fixed:\n```python\n"
    "def double(xs):\n    return [x + x for x in xs]\n```",
    "body only, indented": "    return [2 * x for x in xs]\n",
    "body only, flush left": "result = []\nfor x in xs:\n    result.append(2 * x)\nreturn result",
    "body only, fenced": "```python\n    return list(map(lambda x: 2 * x, xs))\n```",
    "prompt repeated with body": "```py\n" + PROMPT + "    return [2 * x for x in xs]\n```",
    "unclosed fence (ran out of tokens)": "Sure!\n```python\ndef double(xs):\n    return [2 * x for x in xs]\n",
    "no fence, prose first": "Here it is:\ndef double(xs):\n    return [2 * x for x in xs]",
    "untagged fence, bash block after": "```\ndef double(xs):\n    return [2 * x for x in xs]\n```\n"
    "Run it with:\n```bash\npython double.py\n```",
}


@pytest.mark.parametrize("shape", list(REPLIES))
def test_reply_shapes_that_pass(shape: str) -> None:
    assert passes(program_of(REPLIES[shape])), program_of(REPLIES[shape])


def test_extract_code_choices() -> None:
    assert extract_code(REPLIES["function then example"], "double").startswith("def double(xs):")
    assert "x + x" in extract_code(REPLIES["two attempts"], "double")
    assert extract_code("```python\nprint(1)\n```\n```python\nprint(2)\n```") == "print(2)"  # no def: last block
    assert extract_code("just text") == "just text"
    assert "bash" not in extract_code(REPLIES["untagged fence, bash block after"], "double")


def test_wrong_and_broken_replies_fail() -> None:
    assert not passes(program_of("```python\ndef double(xs):\n    return xs\n```"))
    assert not passes(program_of("I cannot help with that."))
    assert not passes(program_of("```python\ndef double(xs)\n    return xs\n```"))  # syntax error


# --- checking through the sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry_point", ["has_close_elements", "find_zero", "decode_cyclic", "histogram", "tri"])
def test_canonical_solutions_pass_in_both_shapes(domain: CodeDomain, entry_point: str) -> None:
    item, solution = by_entry(domain, entry_point)
    body = solution[len(item.prompt) :]
    assert domain.check(item, body)  # body-only completion
    assert domain.check(item, f"Sure.\n```python\n{solution}```\nIt works.")  # complete function, fenced


def test_a_wrong_solution_fails(domain: CodeDomain) -> None:
    item, _ = by_entry(domain, "has_close_elements")
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    result = domain.run(item, wrong)
    assert result.status == "fail" and "AssertionError" in result.reason
    assert not domain.check(item, wrong)


def test_hostile_solutions_are_contained(domain: CodeDomain, tmp_path: Path) -> None:
    quick = CodeDomain(timeout_s=2.0)
    item, solution = by_entry(quick, "has_close_elements")
    home_target = Path.home() / f"ioa-hostile-{secrets.token_hex(4)}"
    tmp_target = tmp_path / "written-by-model"
    writer = (
        "```python\nimport os\n\ndef has_close_elements(numbers, threshold):\n"
        f"    for path in ({str(home_target)!r}, {str(tmp_target)!r}):\n"
        "        with open(path, 'w') as f:\n            f.write('pwned')\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"
    )
    try:
        assert quick.run(item, writer).status != "pass"
        assert not home_target.exists() and not tmp_target.exists()
    finally:
        home_target.unlink(missing_ok=True)
    looping = "```python\ndef has_close_elements(numbers, threshold):\n    while True:\n        pass\n```"
    result = quick.run(item, looping)
    assert result.status == "timeout"
    assert not quick.check(item, looping)
    assert quick.check(item, solution)  # the same domain still passes a real solution


# --- pass@k -------------------------------------------------------------------------------------------------


def test_pass_at_k_by_hand() -> None:
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # = c/n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(5, 4, 2) == 1.0  # fewer than k failures: some draw of k always passes
    assert pass_at_k(5, 0, 5) == 0.0
    assert mean_pass_at_k([(4, 4), (4, 2), (4, 0)], 2) == pytest.approx((1 + (1 - 1 / 6) + 0) / 3)
    assert mean_pass_at_k([], 1) == 0.0
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


# --- ioa eval --benchmark humaneval -------------------------------------------------------------------------


@dataclass
class ScriptedModel:
    """Answers problem 0 always right, problem 1 right on even seeds, problem 2 never (a wrong stub)."""

    solutions: dict[str, str]
    name: str = "scripted"
    fingerprint: str = "scripted-v1"

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        replies = []
        for request in requests:
            user = request.messages[-1][1]
            task = next(t for t in self.solutions if f"def {t}(" in user)
            right = task == "has_close_elements" or (task == "separate_paren_groups" and request.params.seed % 2 == 0)
            code = self.solutions[task] if right else f"def {task}(*a):\n    return 0\n"
            text = f"```python\n{code}```"
            replies.append(Generation(text, 10, 10))
        return replies


@pytest.fixture
def scripted(domain: CodeDomain, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IOA_HOME", str(tmp_path / "home"))
    solutions = {i.meta["entry_point"]: i.solution for i in domain.benchmark_items(3)}
    monkeypatch.setattr(resolve, "load_cached", lambda spec, cache, n_ctx=4096: ScriptedModel(solutions))


def eval_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_eval_benchmark_pass_at_1(scripted: None) -> None:
    out = eval_json("--model", "x", "--benchmark", "humaneval", "--n", "3")
    assert out["domain"] == "code" and out["benchmark"] == "humaneval" and out["split"] == "benchmark"
    assert out["n"] == 3 and out["correct"] == 2 and out["pass@1"] == pytest.approx(2 / 3)
    assert out["max_tokens"] == 512 and out["samples"] == 1 and out["temperature"] == 0.0
    modules = out["modules"]
    assert isinstance(modules, dict) and sum(m["n"] for m in modules.values()) == 3


def test_eval_benchmark_pass_at_k(scripted: None) -> None:
    out = eval_json(
        "--model", "x", "--domain", "code", "--benchmark", "humaneval", "--n", "3", "--samples", "4",
        "--temperature", "0.8",
    )  # fmt: skip
    assert out["samples"] == 4 and out["n"] == 3 and out["correct"] == 2  # accuracy: the first sample (seed 0)
    assert out["pass@1"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert out["pass@4"] == pytest.approx(2 / 3)
    assert "pass@2" not in out and "pass@5" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "mbpp"], "unknown benchmark"),
        (["--benchmark", "humaneval", "--domain", "gsm8k"], "belongs to domain"),
        (["--benchmark", "humaneval", "--samples", "5"], "temperature 0"),
        (["--benchmark", "humaneval", "--n", "0"], "asks for no items"),
        (["--domain", "code", "--samples", "0"], "sampling plan"),
    ],
)
def test_eval_rejects_bad_plans(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["eval", "--model", "x", *args])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.models
def test_student_on_three_humaneval_problems() -> None:
    from ioa.models.registry import embedded, installed_path

    if installed_path(embedded("smollm2-135m")) is None:
        pytest.skip("smollm2-135m is not installed (ioa models install smollm2-135m)")
    result = runner.invoke(
        app, ["eval", "--model", "smollm2-135m", "--domain", "code", "--benchmark", "humaneval", "--n", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["n"] == 3 and 0 <= out["correct"] <= 3 and 0.0 <= out["pass@1"] <= 1.0
    assert out["pass@1"] == pytest.approx(out["accuracy"])
    lo, hi = out["interval"]
    assert 0.0 <= lo <= out["accuracy"] + 1e-12 and out["accuracy"] <= hi <= 1.0  # Wilson's 0/n bound is ~1e-17

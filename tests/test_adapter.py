"""Knowledge Adapter: parsing real teacher reply shapes, rendering, strategy prompts, and synthesis with a
scripted teacher against the real arithmetic checker (verification, retries, dedup, decontamination, lineage)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import pytest

from ioa.adapter import (
    ANSWER_ONLY_TEXT,
    EASIER_TEXT,
    PLAIN_TEXT,
    SCHEMA_TEXT,
    STRATEGY_TEXT,
    InvalidReply,
    Sample,
    SynthesisResult,
    parse_solution,
    pilot_families,
    prompt_hash,
    render,
    synthesise_module,
    teaching_messages,
)
from ioa.config import AdapterConfig
from ioa.dedup import Decontaminator
from ioa.domains.arithmetic import ArithmeticDomain
from ioa.domains.base import Item, Module
from ioa.models.base import ChatRequest, Generation

# ---------------------------------------------------------------------------------------------------------
# parse_solution
# ---------------------------------------------------------------------------------------------------------

GOOD_REPLIES = [
    (
        "code fence",
        '```json\n{"problem": "What is 7 + 8?", "steps": ["7 + 8 = 15"], "final_answer": "15", "check": "15 - 8 = 7"}'
        "\n```",
        "15",
        ["7 + 8 = 15"],
    ),
    ("bare fence", '```\n{"steps": ["a"], "final_answer": "4"}\n```', "4", ["a"]),
    (
        "prose around",
        'Sure! Here is the solution:\n{"steps": ["First, 12 x 3 = 36."], "final_answer": "36"}\nHope this helps.',
        "36",
        ["First, 12 x 3 = 36."],
    ),
    ("trailing commas", '{"steps": ["6 x 7 = 42", "so 42",], "final_answer": "42",}', "42", ["6 x 7 = 42", "so 42"]),
    ("int answer", '{"steps": ["40 + 2 = 42"], "final_answer": 42}', "42", ["40 + 2 = 42"]),
    ("float answer", '{"steps": ["5 / 2 = 2.5"], "final_answer": 2.5}', "2.5", ["5 / 2 = 2.5"]),
    (
        "steps as one string",
        '{"steps": "First, 2 + 2 = 4.\\n\\nThen 4 x 3 = 12.", "final_answer": "12"}',
        "12",
        ["First, 2 + 2 = 4.", "Then 4 x 3 = 12."],
    ),
    ("steps as numbers", '{"steps": [1, 2], "final_answer": "3"}', "3", ["1", "2"]),
    ("no steps (answer key)", '{"final_answer": "12"}', "12", []),
    ("unclosed fence (truncated after the object)", '```json\n{"steps": ["a"], "final_answer": "4"}', "4", ["a"]),
    (
        "python block before the json block",
        'Code:\n```python\nprint({1: 2})\n```\nJSON:\n```json\n{"steps": ["2 + 2 = 4"], "final_answer": "4"}\n```',
        "4",
        ["2 + 2 = 4"],
    ),
    ("braces in the prose", 'Let {x} be the number.\n{"steps": ["x = 4"], "final_answer": "4"}', "4", ["x = 4"]),
    ("object in a list", '[{"steps": ["a"], "final_answer": "9"}]', "9", ["a"]),
    (
        "two objects: the first wins",
        '{"steps": ["a"], "final_answer": "4"}\nOr: {"steps": ["b"], "final_answer": "5"}',
        "4",
        ["a"],
    ),
    ("boxed answer kept as text", '{"steps": ["a"], "final_answer": "\\\\boxed{4}"}', "\\boxed{4}", ["a"]),
]


@pytest.mark.parametrize(("text", "answer", "steps"), [g[1:] for g in GOOD_REPLIES], ids=[g[0] for g in GOOD_REPLIES])
def test_parse_realistic_replies(text: str, answer: str, steps: list[str]) -> None:
    solution = parse_solution(text)
    assert solution.final_answer == answer
    assert solution.steps == steps


def test_parse_keeps_problem_and_check() -> None:
    s = parse_solution('{"problem": "P", "steps": ["s"], "final_answer": "1", "check": {"ok": true}}')
    assert (s.problem, s.check) == ("P", '{"ok": true}')


BAD_REPLIES = [
    ("prose only", "The answer is 12.", "no_json"),
    ("empty", "", "no_json"),
    ("missing comma", '{"steps": ["a" "b"], "final_answer": "12"}', "invalid_json"),
    ("truncated mid-object", '```json\n{"steps": ["7 + 8 = 15", "so the ans', "invalid_json"),
    ("single quotes", "{'steps': ['a'], 'final_answer': '1'}", "invalid_json"),
    ("broken object with a valid inner one", '{"steps": ["a" "b"], "check": {"ok": true}}', "invalid_json"),
    ("no final answer", '{"steps": ["a", "b"]}', "schema"),
    ("null final answer", '{"steps": ["a"], "final_answer": null}', "schema"),
    ("JSON but not a solution", '{"answer": 12}', "schema"),
    ("too many steps", json.dumps({"steps": [str(i) for i in range(21)], "final_answer": "1"}), "schema"),
]


@pytest.mark.parametrize(("text", "reason"), [b[1:] for b in BAD_REPLIES], ids=[b[0] for b in BAD_REPLIES])
def test_unusable_replies_name_their_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidReply) as info:
        parse_solution(text)
    assert info.value.reason == reason


# ---------------------------------------------------------------------------------------------------------
# render and Sample
# ---------------------------------------------------------------------------------------------------------

STEPS = ["First, find the facts: 3 bags of 4.", "3 x 4 = 12", "  ", "Then 12 + 5 = 17", "So the total is 17."]


@pytest.mark.parametrize("representation", ["bare", "short", "steps"])
def test_render_always_ends_with_the_answer_line(representation: str) -> None:
    for steps in (STEPS, [], ["only words"]):
        text = render(steps, representation, "17")  # type: ignore[arg-type]
        assert text.splitlines()[-1] == "#### 17"
        assert text.count("####") == 1


def test_render_bare_steps_short() -> None:
    assert render(STEPS, "bare", "17") == "#### 17"
    assert render(STEPS, "steps", "17") == "\n".join([*(s for s in STEPS if s.strip()), "#### 17"])
    assert render(STEPS, "short", "17") == "3 x 4 = 12\nThen 12 + 5 = 17\n#### 17"  # equations only
    many = [f"{i} + 1 = {i + 1}" for i in range(6)]
    assert render(many, "short", "6").splitlines() == [*many[-3:], "#### 6"]  # at most the last three
    assert render(["think", "so it is 5"], "short", "5") == "so it is 5\n#### 5"  # no equation: last step


def sample() -> Sample:
    return Sample(
        item_id="i1",
        module="times_tables",
        level=2,
        prompt=[{"role": "user", "content": "What is 3 x 4 + 5?"}],
        completion=render(STEPS, "steps", "17"),
        representation="steps",
        final_answer="17",
        steps=STEPS,
        lineage={"run": "r", "representation": "steps", "teacher": "t"},
    )


def test_sample_rendered_in_another_representation() -> None:
    original = sample()
    bare = original.rendered("bare")
    assert bare.completion == "#### 17"
    assert bare.representation == "bare"
    assert bare.lineage == {"run": "r", "representation": "bare", "teacher": "t"}
    assert bare.steps == STEPS  # the solution is kept, so it can be rendered again
    assert bare.rendered("short").completion == "3 x 4 = 12\nThen 12 + 5 = 17\n#### 17"
    assert original.lineage["representation"] == "steps"  # the original is untouched
    assert original.completion.endswith("So the total is 17.\n#### 17")


def test_sample_dict_round_trip() -> None:
    s = sample()
    assert Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# ---------------------------------------------------------------------------------------------------------
# teaching_messages
# ---------------------------------------------------------------------------------------------------------

MODULE = Module("times_tables", "Multiplication tables")
ITEM = Item("times_tables-x", "times_tables", "What is 7 x 8?", "56", level=2)


def system_of(cfg: AdapterConfig, **kwargs: object) -> str:
    messages = teaching_messages(MODULE, ITEM, cfg, **kwargs)  # type: ignore[arg-type]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == ITEM.prompt
    return messages[0]["content"]


def test_all_strategies_on() -> None:
    system = system_of(AdapterConfig())
    assert "Multiplication tables" in system
    assert SCHEMA_TEXT in system
    assert EASIER_TEXT not in system
    for text in STRATEGY_TEXT.values():
        assert system.count(text) == 1


@pytest.mark.parametrize("off", list(STRATEGY_TEXT))
def test_each_strategy_can_be_switched_off_alone(off: str) -> None:
    system = system_of(AdapterConfig(**{off: False}))
    for name, text in STRATEGY_TEXT.items():
        assert (text in system) == (name != off), name
    assert SCHEMA_TEXT in system


def test_all_strategies_off_and_easier() -> None:
    cfg = AdapterConfig(**{name: False for name in STRATEGY_TEXT})
    system = system_of(cfg, easier=1)
    assert not any(text in system for text in STRATEGY_TEXT.values())
    assert EASIER_TEXT in system and SCHEMA_TEXT in system


def test_bare_representation_asks_only_for_an_answer_key() -> None:
    system = system_of(AdapterConfig(), representation="bare")
    assert system == ANSWER_ONLY_TEXT
    assert not any(text in system for text in STRATEGY_TEXT.values())


def test_prompt_hash_is_stable_and_sensitive() -> None:
    a = teaching_messages(MODULE, ITEM, AdapterConfig())
    assert prompt_hash(a) == prompt_hash(teaching_messages(MODULE, ITEM, AdapterConfig()))
    assert prompt_hash(a) != prompt_hash(teaching_messages(MODULE, ITEM, AdapterConfig(plain_language=False)))
    assert len(prompt_hash(a)) == 12


# ---------------------------------------------------------------------------------------------------------
# synthesise_module with a scripted teacher and the real arithmetic checker
# ---------------------------------------------------------------------------------------------------------

Script = Callable[[Item, float], str]


class ScriptedTeacher:
    """Answers each request by looking up the item (by its prompt) and asking `script(item, temperature)`."""

    name = "scripted-teacher"
    fingerprint = "scripted-fp"

    def __init__(self, items: Sequence[Item], script: Script) -> None:
        self.by_prompt = {i.prompt: i for i in items}
        self.script = script
        self.batches: list[list[ChatRequest]] = []

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        self.batches.append(list(requests))
        out = []
        for r in requests:
            item = self.by_prompt[r.messages[-1][1]]
            out.append(Generation(self.script(item, r.params.temperature), prompt_tokens=100, completion_tokens=20))
        return out


def solution(answer: str, steps: Sequence[str] = ("step one", "step two")) -> str:
    return "```json\n" + json.dumps({"problem": "p", "steps": list(steps), "final_answer": answer}) + "\n```"


def wrong(item: Item) -> str:
    return str(int(item.answer) + 1)


DOMAIN = ArithmeticDomain()
ADD = next(m for m in DOMAIN.modules() if m.id == "single_digit_add")
LINEAGE = {"run": "test-run", "stage": 2}


@pytest.fixture(scope="module")
def items() -> list[Item]:
    found = DOMAIN.items("single_digit_add", 6, seed=3, split="train")
    assert len(found) == 6 and len({i.prompt for i in found}) == 6
    return found


def run(
    items: Sequence[Item],
    script: Script,
    representation: str = "steps",
    protected: Sequence[str] = (),
    cfg: AdapterConfig | None = None,
    easier: int = 0,
) -> tuple[ScriptedTeacher, SynthesisResult]:
    teacher = ScriptedTeacher(items, script)
    progress: list[int] = []
    result = synthesise_module(
        teacher,
        DOMAIN,
        ADD,
        items,
        cfg or AdapterConfig(max_attempts=2),
        representation,  # type: ignore[arg-type]
        Decontaminator(protected, n=8),
        dict(LINEAGE),
        easier=easier,
        on_progress=progress.append,
    )
    assert sum(progress) == len(items)  # every item is accounted for in progress, kept or given up
    return teacher, result


def test_synthesis_verifies_retries_and_counts_every_drop(items: list[Item]) -> None:
    i0, i1, i2, i3, i4, i5 = items

    def script(item: Item, temperature: float) -> str:
        retry = temperature > 0
        if item is i1:  # wrong at first, right when resampled
            return solution(item.answer) if retry else solution(wrong(item))
        if item is i2:  # prose without JSON at first
            return solution(item.answer) if retry else f"The answer is {item.answer}."
        if item is i3:
            return solution(wrong(item))  # always wrong: never trained on
        if item is i4:
            return '{"steps": ["a" "b"], "final_answer": "1"}'  # always broken JSON
        return solution(item.answer)  # i0, i5

    teacher, result = run(items, script, protected=[i5.prompt])
    assert [s.item_id for s in result.samples] == [i0.id, i1.id, i2.id]
    assert dict(result.drops) == {"wrong_answer": 3, "no_json": 1, "invalid_json": 2, "contaminated": 1}
    assert result.generated == 10
    assert result.teacher_tokens == 10 * 120

    first, second = teacher.batches
    assert len(first) == 6 and {r.params.temperature for r in first} == {0.0}
    assert [r.messages[-1][1] for r in second] == [i1.prompt, i2.prompt, i3.prompt, i4.prompt]
    assert all(r.params.temperature > 0 for r in second)
    assert {r.params.seed for r in first} != {r.params.seed for r in second}  # a resample, not the cached reply


def test_samples_carry_lineage_and_the_reference_answer(items: list[Item]) -> None:
    _, result = run(items[:2], lambda item, t: solution(f"{item.answer}.0", ["add them", "count on"]))
    assert len(result.samples) == 2
    for s, item in zip(result.samples, items[:2], strict=True):
        assert s.item_id == item.id and s.module == "single_digit_add" and s.level == item.level
        assert s.prompt == DOMAIN.messages(item)
        assert s.final_answer == item.answer
        assert s.completion == f"add them\ncount on\n#### {item.answer}"  # canonical answer, not "7.0"
        assert s.steps == ["add them", "count on"]
        assert s.representation == "steps"
        expected_hash = prompt_hash(teaching_messages(ADD, item, AdapterConfig(max_attempts=2)))
        assert s.lineage == {
            "run": "test-run",
            "stage": 2,
            "module": "single_digit_add",
            "difficulty": item.level,
            "strategies": list(STRATEGY_TEXT),
            "representation": "steps",
            "teacher": "scripted-teacher",
            "prompt_hash": expected_hash,
            "verification": "domain_checker",
            "reply": "json",
        }


def test_lineage_strategies_follow_the_config(items: list[Item]) -> None:
    cfg = AdapterConfig(max_attempts=1, concretization=False, plain_language=False)
    _, result = run(items[:1], lambda item, t: solution(item.answer), cfg=cfg, easier=1)
    assert result.samples[0].lineage["strategies"] == ["decomposition", "cognitive_load", "fixed_format", "easier"]


def test_a_worked_solution_without_steps_is_a_schema_drop(items: list[Item]) -> None:
    _, result = run(items[:2], lambda item, t: json.dumps({"final_answer": item.answer}))
    assert result.samples == []
    assert dict(result.drops) == {"schema": 4}


def test_bare_representation_needs_only_the_answer(items: list[Item]) -> None:
    teacher, result = run(items[:3], lambda item, t: json.dumps({"final_answer": item.answer}), representation="bare")
    assert [s.completion for s in result.samples] == [f"#### {i.answer}" for i in items[:3]]
    assert all(s.lineage["strategies"] == [] for s in result.samples)
    assert teacher.batches[0][0].messages[0][1] == ANSWER_ONLY_TEXT
    assert not result.drops


def test_an_answer_key_in_prose_is_repaired_not_dropped(items: list[Item]) -> None:
    i0, i1, i2 = items[:3]
    replies = {
        i0.id: "Here's the breakdown: first add, so the final answer is \\boxed{" + i0.answer + "}.",
        i1.id: "Mark the question and the answer in the answer key.",  # no answer at all: still a drop
        i2.id: f"The answer is {wrong(i2)}.",  # repaired, then wrong: the checker still rejects it
    }
    _, result = run(items[:3], lambda item, t: replies[item.id], representation="bare",
                    cfg=AdapterConfig(max_attempts=1))
    assert [s.item_id for s in result.samples] == [i0.id]
    assert result.samples[0].completion == f"#### {i0.answer}"
    assert result.samples[0].lineage["reply"] == "answer_from_text"
    assert dict(result.repairs) == {"answer_from_text": 1}  # kept after repair
    assert dict(result.drops) == {"no_json": 1, "wrong_answer": 1}
    # A worked solution is never rebuilt from prose: the steps are what it is for.
    _, worked = run(items[:1], lambda item, t: f"The answer is {item.answer}.", cfg=AdapterConfig(max_attempts=1))
    assert worked.samples == [] and dict(worked.drops) == {"no_json": 1}


def test_near_duplicate_items_are_dropped(items: list[Item]) -> None:
    twin = Item("twin", "single_digit_add", items[0].prompt, items[0].answer, level=items[0].level)
    _, result = run([items[0], twin, items[1]], lambda item, t: solution(item.answer))
    assert [s.item_id for s in result.samples] == [items[0].id, items[1].id]
    assert dict(result.drops) == {"near_duplicate": 1}


def test_single_attempt_does_not_retry(items: list[Item]) -> None:
    teacher, result = run(items[:3], lambda item, t: "no idea", cfg=AdapterConfig(max_attempts=1))
    assert len(teacher.batches) == 1
    assert dict(result.drops) == {"no_json": 3}
    assert result.samples == [] and result.generated == 3


def test_synthesis_result_merge(items: list[Item]) -> None:
    _, a = run(items[:2], lambda item, t: solution(item.answer))
    _, b = run(items[2:4], lambda item, t: "nothing")
    a.merge(b)
    assert len(a.samples) == 2
    assert dict(a.drops) == {"no_json": 4}
    assert (a.generated, a.teacher_tokens) == (6, 6 * 120)


def test_the_plain_representation_asks_for_the_teachers_own_solution() -> None:
    module = ArithmeticDomain().module("multi_digit_add")
    item = ArithmeticDomain().items("multi_digit_add", 1, 0)[0]
    system = teaching_messages(module, item, AdapterConfig(), representation="plain")[0]["content"]
    assert system.startswith(PLAIN_TEXT) and SCHEMA_TEXT in system
    assert not any(text in system for text in STRATEGY_TEXT.values())
    assert teaching_messages(module, item, AdapterConfig(enabled=False))[0]["content"] == system


def test_pilot_families() -> None:
    assert pilot_families(["bare", "plain", "steps"]) == ["plain", "steps"]
    assert pilot_families(["bare", "steps", "plain"]) == ["steps", "plain"]
    assert pilot_families(["bare", "short"]) == ["steps"]  # short and steps render the same solutions
    assert pilot_families(["bare"]) == ["steps"]  # bare is rendered from a worked set

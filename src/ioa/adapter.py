"""Knowledge Adapter (DESIGN §4): the teacher writes solutions pitched at the student's level.

Flow per module: teaching prompt (five strategies) → structured JSON reply → validate (repair or retry,
count every drop) → verify against the domain's checker → dedup → decontaminate → render in the chosen
representation → sample with full lineage.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ioa.config import AdapterConfig
from ioa.dedup import Decontaminator, near_duplicates
from ioa.domains.answers import extract_answer
from ioa.domains.base import Domain, Item, Module
from ioa.matching import TokenBudget, generate_within
from ioa.models.base import ChatModel, ChatRequest, Message, SamplingParams

# bare: `#### answer` only; short: the last equation lines; steps: the Adapter's worked solution; plain: the
# teacher's own step-by-step solution, without the five strategies (the prompt of the "without Adapter"
# ablation), a calibration candidate because a small student may absorb the teacher's own style best.
Representation = Literal["bare", "short", "steps", "plain"]

# Teacher requests per generate() call: fills the in-process batch slots, moves the progress bar, and bounds
# what a crash can lose to one chunk (each chunk's replies are in the call cache before the next starts).
TEACHER_CHUNK = 8

# One sentence per strategy; the prompt is their composition, so each can be switched off alone. Worded for a
# small student, which copies every token it is shown: measured with the 1.5B teacher on 12 arithmetic items,
# the earlier wording ("find the facts, relate them, set up, compute, check"; "tie the idea to an everyday
# example") gave filler steps ("Relate them: 4 and 5 are consecutive numbers") and 8/11 right answers; this
# one gives one calculation per line ("9 + 9 = 18", "18 + 6 = 24"), 10/12 right, 29% fewer tokens.
STRATEGY_TEXT = {
    "concretization": (
        "Only if the idea is new to a beginner, one line may tie it to something concrete (coins, apples)."
    ),
    "decomposition": "Break the work into the few small steps a beginner needs, in order, and nothing else.",
    "cognitive_load": "One operation per step, never two at once.",
    "fixed_format": (
        "Write each step as one short line holding one calculation, such as '12 + 5 = 17'; never restate the "
        "problem or say what you will do."
    ),
    "plain_language": "Where words are needed, use short sentences and common words.",
}
EASIER_TEXT = "The student is struggling: use even smaller steps and simpler words than usual."
# Without the Adapter (the ablation): a plain request for the teacher's own step-by-step solution.
PLAIN_TEXT = "Solve the problem step by step."

SCHEMA_TEXT = (
    'Reply with ONE JSON object and nothing else: {"problem": <the problem>, "steps": [<step>, ...], '
    '"final_answer": <answer>, "check": <one line verifying the answer>}'
)
# A bare answer needs no worked solution, so the teacher is not asked (nor paid) for one.
ANSWER_ONLY_TEXT = (
    "You are a careful teacher preparing answer keys. Work the problem out accurately, then reply with ONE "
    'JSON object and nothing else: {"final_answer": <the answer as a plain number or fraction>}, '
    'for example {"final_answer": "12"}.'
)
ANSWER_FROM_TEXT = "answer_from_text"  # how an answer key read from a prose reply is marked


class TeacherSolution(BaseModel):
    """The structured reply the teacher must return (steps may be empty only for an answer key)."""

    problem: str = ""
    steps: list[str] = Field(default_factory=list, max_length=20)
    final_answer: str
    check: str = ""


@dataclass(frozen=True)
class Sample:
    """A verified training example with its lineage."""

    item_id: str
    module: str
    level: int
    prompt: list[Message]
    completion: str
    representation: str
    final_answer: str
    steps: list[str]
    lineage: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Sample:
        return cls(**d)  # type: ignore[arg-type]

    def rendered(self, representation: Representation) -> Sample:
        """The same verified teacher solution shown to the student in another representation."""
        lineage = {**self.lineage, "representation": representation}
        completion = render(self.steps, representation, self.final_answer)
        return replace(self, completion=completion, representation=representation, lineage=lineage)


@dataclass
class SynthesisResult:
    samples: list[Sample]
    drops: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)  # replies kept after a repair, by kind
    generated: int = 0
    teacher_tokens: int = 0
    budget_exhausted: bool = False  # a call was not sent: it might not have fitted the token budget

    def merge(self, other: SynthesisResult) -> None:
        self.samples += other.samples
        self.drops.update(other.drops)
        self.repairs.update(other.repairs)
        self.generated += other.generated
        self.teacher_tokens += other.teacher_tokens
        self.budget_exhausted = self.budget_exhausted or other.budget_exhausted


def pilot_family(representation: Representation) -> Representation:
    """The teacher prompt a representation's solutions come from: the plain one, or the Adapter's (whose
    worked solutions can be rendered bare, short or as steps)."""
    return "plain" if representation == "plain" else "steps"


def pilot_families(candidates: Sequence[Representation]) -> list[Representation]:
    """The sets of teacher solutions a calibration pilot needs for these candidates, in candidate order
    (bare alone needs no worked solution but is rendered from the first set, so it asks for one)."""
    families = list(dict.fromkeys(pilot_family(r) for r in candidates if r != "bare"))
    return families or ["steps"]


def strategies_on(cfg: AdapterConfig) -> list[str]:
    return [name for name in STRATEGY_TEXT if getattr(cfg, name)]


def teaching_messages(
    module: Module, item: Item, cfg: AdapterConfig, easier: int = 0, representation: Representation = "steps"
) -> list[Message]:
    """The teacher's prompt: role, strategies, schema, then the problem (answer key only for bare answers).
    Without the Adapter (cfg.enabled false) or for the plain representation: the plain step-by-step
    request, whatever the other settings."""
    if not cfg.enabled or representation == "plain":
        return [{"role": "system", "content": f"{PLAIN_TEXT}\n{SCHEMA_TEXT}"}, {"role": "user", "content": item.prompt}]
    if representation == "bare":
        return [{"role": "system", "content": ANSWER_ONLY_TEXT}, {"role": "user", "content": item.prompt}]
    parts = [
        f"You are a patient teacher writing a worked solution for a weak student learning: {module.title}.",
        *(STRATEGY_TEXT[s] for s in strategies_on(cfg)),
        *([EASIER_TEXT] if easier > 0 else []),
        SCHEMA_TEXT,
    ]
    return [{"role": "system", "content": "\n".join(parts)}, {"role": "user", "content": item.prompt}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class InvalidReply(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SCHEMA_KEYS = frozenset(TeacherSolution.model_fields)
_DECODER = json.JSONDecoder()


def find_json_object(text: str, keys: frozenset[str] = _SCHEMA_KEYS) -> dict[str, Any]:
    """The reply's JSON object: fenced blocks first, then the whole text; the first object holding one of
    `keys` (default: a solution's) wins, so a ```python block, braces in prose or a second object do not hide
    it. Trailing commas are repaired; InvalidReply says why nothing usable was found."""
    broken, other = False, False
    for body in [*(m.group(1) for m in _FENCE.finditer(text)), text]:
        body = _TRAILING_COMMA.sub(r"\1", body)
        pos = body.find("{")
        while pos >= 0:
            try:
                obj, end = _DECODER.raw_decode(body, pos)
            except json.JSONDecodeError:
                broken = True
                pos = body.find("{", pos + 1)
                continue
            if isinstance(obj, dict) and keys & obj.keys():
                return obj
            other = True
            pos = body.find("{", end)  # not into the object just read
    if broken:
        raise InvalidReply("invalid_json")
    if other:
        raise InvalidReply("schema")  # valid JSON, but not the object asked for
    raise InvalidReply("no_json")


def parse_solution(text: str) -> TeacherSolution:
    """Validate a teacher reply, repairing the usual damage (code fences, prose around JSON, trailing commas)."""
    data = find_json_object(text)
    if isinstance(data.get("steps"), str):
        data["steps"] = [s for s in data["steps"].splitlines() if s.strip()]
    if isinstance(data.get("steps"), list):
        data["steps"] = [" ".join(map(str, s.values())) if isinstance(s, dict) else str(s) for s in data["steps"]]
    for key in ("final_answer", "problem", "check"):
        if data.get(key) is None:
            data.pop(key, None)  # null is missing: a null final answer must not become the answer "None"
        elif not isinstance(data[key], str):
            data[key] = json.dumps(data[key]) if isinstance(data[key], list | dict) else str(data[key])
    try:
        return TeacherSolution.model_validate(data)
    except ValidationError:
        raise InvalidReply("schema") from None


_EQUATION = re.compile(r"[\d)]\s*[-+×x*/÷]\s*[\d(].*=")


def render(steps: Sequence[str], representation: Representation, answer: str) -> str:
    """What the student is trained to say. The final line is always `#### answer` (fixed format)."""
    final = f"#### {answer}"
    if representation == "bare":
        return final
    steps = [s.strip() for s in steps if s.strip()]
    if representation == "short":
        steps = [s for s in steps if _EQUATION.search(s)][-3:] or steps[-1:]
    return "\n".join([*steps, final])


def prompt_hash(messages: Sequence[Message]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]


def synthesise_module(
    teacher: ChatModel,
    domain: Domain,
    module: Module,
    items: Sequence[Item],
    cfg: AdapterConfig,
    representation: Representation,
    decontaminator: Decontaminator,
    lineage: dict[str, object],
    easier: int = 0,
    on_progress: Callable[[int], None] | None = None,
    budget: TokenBudget | None = None,
) -> SynthesisResult:
    """Teacher solutions for `items` (whose answers the domain knows), verified, deduplicated, clean.
    With a token `budget`, a call is only sent while its worst case still fits; the rest are not asked."""
    result = SynthesisResult(samples=[])
    pending = list(items)
    verified: list[tuple[Item, TeacherSolution, str]] = []
    for attempt in range(cfg.max_attempts):
        if not pending:
            break
        params = SamplingParams(
            temperature=0.0 if attempt == 0 else 0.7, max_tokens=cfg.teacher_max_tokens, seed=attempt
        )
        retry: list[Item] = []
        start = 0
        while start < len(pending):
            chunk = pending[start : start + TEACHER_CHUNK]
            prompts = [teaching_messages(module, item, cfg, easier, representation) for item in chunk]
            replies = generate_within(teacher, [ChatRequest.of(p, params) for p in prompts], budget)
            if not replies:  # the token budget is spent: what was not asked is not a drop
                result.budget_exhausted = True
                break
            chunk, prompts = chunk[: len(replies)], prompts[: len(replies)]  # the budget may cut a chunk short
            start += len(chunk)
            for item, messages, reply in zip(chunk, prompts, replies, strict=True):
                result.generated += 1
                result.teacher_tokens += reply.prompt_tokens + reply.completion_tokens
                reason = _verify(domain, item, reply.text, representation)
                if isinstance(reason, TeacherSolution):
                    verified.append((item, reason, prompt_hash(messages)))
                    if reason.check == ANSWER_FROM_TEXT:
                        result.repairs[ANSWER_FROM_TEXT] += 1
                else:
                    result.drops[reason] += 1
                    retry.append(item)
            if on_progress:
                on_progress(len(chunk) - sum(1 for item in chunk if item in retry))
        pending = retry
        if result.budget_exhausted:
            break
    if on_progress and pending:
        on_progress(len(pending))

    for idx in sorted(near_duplicates([i.prompt for i, _, _ in verified], cfg.dedup_threshold), reverse=True):
        verified.pop(idx)
        result.drops["near_duplicate"] += 1
    for item, solution, phash in verified:
        if decontaminator.contaminated(item.prompt):
            result.drops["contaminated"] += 1
            continue
        result.samples.append(
            Sample(
                item_id=item.id,
                module=module.id,
                level=item.level,
                prompt=domain.messages(item),
                completion=render(solution.steps, representation, item.answer),
                representation=representation,
                final_answer=item.answer,
                steps=solution.steps,
                lineage={
                    **lineage,
                    "module": module.id,
                    "difficulty": item.level,
                    "strategies": _strategies_used(cfg, representation, easier),
                    "representation": representation,
                    "teacher": teacher.name,
                    "prompt_hash": phash,
                    "verification": "domain_checker",
                    "reply": "answer_from_text" if solution.check == ANSWER_FROM_TEXT else "json",
                },
            )
        )
    return result


def _strategies_used(cfg: AdapterConfig, representation: Representation, easier: int) -> list[str]:
    if representation in ("bare", "plain") or not cfg.enabled:
        return []
    return strategies_on(cfg) + (["easier"] if easier else [])


def _verify(domain: Domain, item: Item, text: str, representation: Representation) -> TeacherSolution | str:
    """The parsed solution if valid and correct, else the drop reason."""
    try:
        solution = parse_solution(text)
    except InvalidReply as exc:
        # An answer key needs nothing but the answer: a reply that states one in prose ("the final answer
        # is \\boxed{4}") is repaired rather than dropped (the small teachers often ignore the JSON request).
        found = extract_answer(text) if representation == "bare" else None
        if found is None:
            return exc.reason
        solution = TeacherSolution(final_answer=found, check=ANSWER_FROM_TEXT)
    if not domain.check(item, f"#### {solution.final_answer}"):
        return "wrong_answer"
    if representation != "bare" and not solution.steps:
        return "schema"
    return solution

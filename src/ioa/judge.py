"""Reference-based judging of free-text answers: the teacher grades a response against the reference.

One fixed rubric (`RUBRIC`), one structured verdict `{"correct": bool, "reason": str}` validated with
pydantic (the reply is repaired like every structured teacher reply, see adapter.find_json_object), greedy
first and one sampled retry. Every call goes through the teacher's call cache; grades are also kept in memory
for the session. ROUGE-L of the response against the reference is computed beside each verdict and reported
with it (a cheap, model-free signal; it never decides correctness).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ValidationError

from ioa.adapter import InvalidReply, find_json_object
from ioa.dedup import rouge_l, tokens
from ioa.models.base import ChatModel, ChatRequest, Message, SamplingParams

RUBRIC = (
    "You are a strict, fair grader. Compare the STUDENT ANSWER with the REFERENCE ANSWER to the QUESTION.\n"
    "Correct: the student's final answer or conclusion means the same as the reference's (equal numbers, the same "
    "facts, the same choice); wording, length and style do not matter.\n"
    "Incorrect: it contradicts the reference, gives a different final answer, leaves out an essential part, or "
    "hedges between several answers.\n"
    'Reply with ONE JSON object and nothing else: {"correct": true or false, "reason": "<one short sentence>"}'
)
ATTEMPTS = 2
MAX_TOKENS = 160
_KEYS = frozenset({"correct"})


class Verdict(BaseModel):
    """The grader's structured reply."""

    correct: bool
    reason: str = ""


@dataclass(frozen=True)
class Grade:
    """A verdict with ROUGE-L beside it; `parsed` is False when no usable verdict came back (graded wrong)."""

    correct: bool
    reason: str
    rouge_l: float
    parsed: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def judge_messages(question: str, reference: str, response: str) -> list[Message]:
    parts = (("QUESTION", question), ("REFERENCE ANSWER", reference), ("STUDENT ANSWER", response))
    user = "\n\n".join(f"{label}:\n{text.strip()}" for label, text in parts)
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> Verdict:
    """The verdict in a grader's reply ("yes"/"true" strings accepted); InvalidReply when there is none."""
    data = find_json_object(text, _KEYS)
    if data.get("reason") is None:
        data.pop("reason", None)
    elif not isinstance(data["reason"], str):
        data["reason"] = str(data["reason"])
    try:
        return Verdict.model_validate(data)
    except ValidationError:
        raise InvalidReply("schema") from None


def answer_rouge(response: str, reference: str) -> float:
    return rouge_l(tokens(response), tokens(reference))


class Judge:
    """Grades responses against references with the teacher (every call cached by the teacher's cache)."""

    def __init__(self, teacher: ChatModel, max_tokens: int = MAX_TOKENS) -> None:
        self.teacher = teacher
        self.max_tokens = max_tokens
        self.unparsed = 0  # verdicts that could not be read after the retry (counted as wrong)
        self._grades: dict[str, Grade] = {}

    def grade(self, question: str, reference: str, response: str) -> Grade:
        key = hashlib.sha256("\x00".join((question, reference, response)).encode()).hexdigest()
        if key in self._grades:
            return self._grades[key]
        score = answer_rouge(response, reference)
        fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": Verdict.model_json_schema()}}
        grade = None
        problem = ""
        for attempt in range(ATTEMPTS):
            params = SamplingParams(temperature=0.0 if attempt == 0 else 0.7, max_tokens=self.max_tokens, seed=attempt)
            reply = self.teacher.generate([ChatRequest.of(judge_messages(question, reference, response), params, fmt)])
            try:
                verdict = parse_verdict(reply[0].text)
            except InvalidReply as exc:
                problem = exc.reason
                continue
            grade = Grade(verdict.correct, verdict.reason, score)
            break
        if grade is None:
            self.unparsed += 1
            grade = Grade(False, f"no usable verdict from the grader ({problem})", score, parsed=False)
        self._grades[key] = grade
        return grade

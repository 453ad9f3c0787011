"""A scripted teacher for the taxonomy and seed-data tests: it answers each request by what it asks for
(hierarchy, labels, prerequisites, verdict), from canned data, and records every request."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence

from ioa.models.base import ChatRequest, Generation

# (category, module id, title, description): ten modules, the default minimum.
MODULES: list[tuple[str, str, str, str]] = [
    ("arithmetic", "add", "Addition", "adding whole numbers together"),
    ("arithmetic", "sub", "Subtraction", "taking one number away from another"),
    ("arithmetic", "mul", "Multiplication", "repeated addition and times tables"),
    ("arithmetic", "div", "Division", "sharing equally and quotients"),
    ("money", "prices", "Prices", "cost of several things at a price each"),
    ("money", "change", "Change", "money given back after paying"),
    ("time", "clocks", "Clock time", "hours and minutes on a clock"),
    ("time", "rates", "Rates", "speed and work per hour"),
    ("geometry", "area", "Area", "area of rectangles and squares"),
    ("geometry", "perimeter", "Perimeter", "distance around a shape"),
]


def hierarchy_reply(modules: Sequence[tuple[str, str, str, str]] = MODULES) -> str:
    categories: dict[str, list[dict[str, object]]] = {}
    for category, mid, title, description in modules:
        categories.setdefault(category, []).append({"id": mid, "title": title, "description": description, "tier": 2})
    return json.dumps({"categories": [{"id": c, "title": c.title(), "modules": ms} for c, ms in categories.items()]})


def keyword_label(text: str) -> str:
    """The module whose id appears in the text as a word in brackets, e.g. "[area]"."""
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else "add"


def numbered(user: str) -> list[tuple[int, str]]:
    return [(int(n), t) for n, t in re.findall(r"^(\d+)\. (.*)$", user, re.M)]


class FakeTeacher:
    """Canned replies by request kind. `replies[kind]` (a queue) overrides the default reply of that kind."""

    name = "fake-teacher"

    def __init__(
        self,
        label: Callable[[str], str] = keyword_label,
        prerequisites: dict[str, list[str]] | None = None,
        verdict: Callable[[str], str] | None = None,
        fingerprint: str = "fake-fp",
    ) -> None:
        self.label = label
        self.prerequisites = prerequisites if prerequisites is not None else {"sub": ["add"], "change": ["sub"]}
        self.verdict = verdict or (lambda user: '{"correct": true, "reason": "same answer"}')
        self.fingerprint = fingerprint
        self.replies: dict[str, list[str]] = {}
        self.calls: list[tuple[str, ChatRequest]] = []

    @staticmethod
    def kind(request: ChatRequest) -> str:
        system = request.messages[0][1]
        if "designing a curriculum" in system:
            return "hierarchy"
        if "sort practice problems" in system:
            return "labels"
        if "ordering a curriculum" in system:
            return "prerequisites"
        if "grader" in system:
            return "verdict"
        raise AssertionError(f"unexpected request: {system[:80]}")

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _ in self.calls)

    def kinds(self) -> Counter[str]:
        return Counter(k for k, _ in self.calls)

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        out = []
        for request in requests:
            kind = self.kind(request)
            self.calls.append((kind, request))
            queue = self.replies.get(kind)
            out.append(Generation(queue.pop(0) if queue else self._default(kind, request), 100, 50))
        return out

    def _default(self, kind: str, request: ChatRequest) -> str:
        user = request.messages[-1][1]
        if kind == "hierarchy":
            return hierarchy_reply()
        if kind == "labels":
            return json.dumps({"labels": {str(n): self.label(text) for n, text in numbered(user)}})
        if kind == "prerequisites":
            return json.dumps({"prerequisites": self.prerequisites})
        return self.verdict(user)


def items_for(modules: Sequence[str], per_module: int, start: int = 0) -> dict[str, str]:
    """id → prompt, `per_module` distinct prompts per module, each naming its module as [id]."""
    return {
        f"seed-{start + k * len(modules) + i}": f"Problem {start + k} about [{m}]: a story with {k + 3} things"
        for k in range(per_module)
        for i, m in enumerate(modules)
    }

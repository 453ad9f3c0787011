"""Scripted stand-ins for the models of `ioa run` / `ioa bench`: a teacher that does arithmetic, a student
whose accuracy grows with what it was trained on, and a trainer that records the data instead of training.

The teacher answers every prompt shape the loop and the baselines send (probe, worked solution, answer key,
Self-Instruct, LLM2LLM, independent solve), and is wrong on a fixed share of problems so that verification
has something to drop. The student is right on an item when a hash of (item, weights) falls under its skill,
and its skill is the number of examples it was trained on (kept in the fake weights directory).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ioa.models.base import ChatRequest, Generation
from ioa.models.cache import CachedModel, CallCache

_EXPR = re.compile(r"What is ([\d\s+×*-]+)\?")


def _h(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def solve(problem: str, answers: dict[str, str]) -> str | None:
    if problem in answers:
        return answers[problem]
    m = _EXPR.search(problem)
    if not m:
        return None
    return str(eval(m.group(1).replace("×", "*")))  # digits and + - × only (the regex)


class FakeTeacher:
    """Arithmetic by evaluation; wrong on problems whose hash is 0 mod `wrong_every` (a fixed share)."""

    name = "fake-teacher"
    fingerprint = "fake-teacher-v1"

    def __init__(self, answers: dict[str, str] | None = None, wrong_every: int = 7) -> None:
        self.answers = answers or {}
        self.wrong_every = wrong_every
        self.calls = 0

    def _answer(self, problem: str) -> str:
        right = solve(problem, {**ANSWERS, **self.answers})
        if right is None:
            return "0"
        if self.wrong_every and _h(problem) % self.wrong_every == 0:
            return str(int(right) + 1)
        return right

    def _reply(self, request: ChatRequest) -> str:
        system = request.messages[0][1]
        user = request.messages[-1][1]
        if "practice problems" in system or "answered the problem below wrongly" in system:
            base = [int(x) for x in re.findall(r"\d+", user)[:2]] or [1, 1]
            a = base[0] + 1 + request.params.seed * 3 + _h(user) % 50
            b = (base[1] if len(base) > 1 else 2) + request.params.seed
            problem = f"What is {a} + {b}?"
            written = self._answer(problem)
            if self.wrong_every and _h(problem, "write") % self.wrong_every == 0:
                written = str(int(written) + 2)  # a slip while writing: the independent solve disagrees
            return json.dumps({"problem": problem, "steps": [f"{a} + {b} = {written}."], "final_answer": written})
        if "answer keys" in system:
            return json.dumps({"final_answer": self._answer(user)})
        if "JSON" in system:  # a worked solution (with or without the Adapter's strategies)
            ans = self._answer(user)
            return json.dumps({"problem": user, "steps": [f"Work out {user}", f"It is {ans}."], "final_answer": ans})
        return f"Step by step.\n#### {self._answer(user)}"  # the domain's question prompt (probes, solves)

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            self.calls += 1
            text = self._reply(r)
            prompt = sum(len(c) for _, c in r.messages) // 4
            out.append(Generation(text, prompt, len(text) // 4 + 1))
        return out


def skill_of(path: Path) -> int:
    """The examples a fake student was trained on; a path that holds no model is an error, as for a real one."""
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"no model in {path}")
    f = Path(path) / "skill.json"
    return json.loads(f.read_text())["examples"] if f.exists() else 0


class FakeStudent:
    """Right on an item when hash(item, weights) % 100 < 15 + examples trained (capped at 95)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.batch_size = 8
        self.skill = skill_of(self.path)

    @property
    def fingerprint(self) -> str:
        return f"fake-student-{self.skill}"

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            user = r.messages[-1][1]
            right = solve(user, ANSWERS) or "0"
            ok = _h(user, self.skill) % 100 < min(95, 15 + self.skill)
            text = f"#### {right}" if ok else "#### 99999"
            out.append(Generation(text, 10, 3))
        return out


ANSWERS: dict[str, str] = {}  # GSM8K fixture questions → answers (filled by write_gsm8k)


def fake_train(student: str | Path, examples: Sequence[Any], out_dir: Path, cfg: Any = None, **_: Any) -> Any:
    """Records the training instead of doing it: skill = the student's + len(examples)."""
    from ioa.training import TrainResult

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text("{}")
    (out_dir / "model.safetensors").write_bytes(b"fake")
    (out_dir / "skill.json").write_text(json.dumps({"examples": skill_of(Path(student)) + len(examples)}))
    (out_dir / "examples.json").write_text(json.dumps(list(examples)))
    return TrainResult(out_dir=out_dir, method="fake", examples=len(examples), steps=1, losses=[0.1],
                       final_loss=0.1, tokens=0, completion_tokens=0, seconds=0.0, tokens_per_s=0.0)


def write_gsm8k(root: Path, n: int = 6) -> Path:
    """A tiny GSM8K folder (train.jsonl, test.jsonl) whose answers the fake models know."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        q = f"Sam has {i + 3} apples and buys {2 * i + 1} more. How many apples does Sam have?"
        a = str(i + 3 + 2 * i + 1)
        ANSWERS[q] = a
        rows.append({"question": q, "answer": f"{i + 3} + {2 * i + 1} = {a}\n#### {a}"})
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "train.jsonl").write_text(json.dumps({"question": "Ann has 1 pen. How many?", "answer": "#### 1"}) + "\n")
    return root


def base_student(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"fake")
    return root


def patch_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every student load and every training of the loop and the bench to the fakes."""
    import ioa.bench
    import ioa.run

    def load_student(path: Path, cache: CallCache, name: str | None = None) -> CachedModel:
        return CachedModel(FakeStudent(path), cache)

    def load_cached(spec: str, cache: CallCache, *args: Any, **kwargs: Any) -> CachedModel:
        return CachedModel(FakeStudent(spec), cache)

    for module in (ioa.run, ioa.bench):
        monkeypatch.setattr(module, "load_student_model", load_student)
        monkeypatch.setattr(module, "train", fake_train)
    monkeypatch.setattr(ioa.run, "load_cached", load_cached)

"""The HTTP teacher against a real llama_cpp.server on 127.0.0.1 (SmolLM2-135M: fast on 2 shared cores).

(a) greedy replies through HTTP equal in-process llama-cpp-python's, (b) a fault-injecting proxy in front
of the server: the batch completes, every injected fault is counted, no sample lost or duplicated.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_support import SERVED_MODEL, FaultProxy, llama_cpp_server
from ioa.models.base import ChatRequest, SamplingParams
from ioa.models.cache import CachedModel, CallCache
from ioa.models.http import HTTPChatModel
from ioa.models.registry import embedded, installed_path

pytestmark = pytest.mark.models

PROMPTS = [
    "What is 17 + 25? Answer with the number only.",
    "Name the capital of France.",
    "Write a haiku about rivers.",
    "Explain in one sentence what a prime number is.",
    "List three colours.",
]


@pytest.fixture(scope="session")
def served_model() -> Path:
    path = installed_path(embedded(SERVED_MODEL))
    if path is None:
        pytest.skip(f"{SERVED_MODEL} is not installed: run `ioa models install {SERVED_MODEL}`")
    if importlib.util.find_spec("llama_cpp.server") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip("llama_cpp.server is not installed: pip install 'llama-cpp-python[server]'")
    return path


@pytest.fixture(scope="session")
def server_url(served_model: Path) -> Iterator[str]:
    with llama_cpp_server(served_model, alias=SERVED_MODEL, n_ctx=2048) as url:
        yield url


@pytest.fixture()
def fresh_server_url(served_model: Path) -> Iterator[str]:
    # llama_cpp.server reuses the KV cache of the previous prompt's common prefix, and how a prompt is split
    # between reused and freshly evaluated tokens changes the floating-point sums: its greedy reply to the
    # same request can depend on what it served before. A comparison needs a server with no history.
    with llama_cpp_server(served_model, alias=SERVED_MODEL, n_ctx=2048) as url:
        yield url


def _requests(max_tokens: int) -> list[ChatRequest]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
    return [ChatRequest.of([{"role": "user", "content": p}], params) for p in PROMPTS]


def _teacher(url: str, **kw: object) -> HTTPChatModel:
    kw.setdefault("dialect", "llama.cpp")
    return HTTPChatModel(url, SERVED_MODEL, trust_env=False, seed=0, **kw)  # type: ignore[arg-type]


def test_http_equals_in_process_at_temperature_0(served_model: Path, fresh_server_url: str) -> None:
    from ioa.models.llamacpp import LlamaCppModel

    requests = _requests(max_tokens=48)
    # What makes them equal (investigated): the same chat template (both take it from the GGUF metadata),
    # greedy decoding, and the same sampling defaults — llama_cpp.server defaults repeat_penalty to 1.1 where
    # in-process llama-cpp-python uses 1.0, which dialect="llama.cpp" sends explicitly. The reference is the
    # in-process one-request-at-a-time path: decoding several sequences in one llama.cpp batch changes the
    # floating-point sums enough to flip greedy near-ties (e.g. "a river flows" vs "a river of life"). One
    # request in flight keeps the prompt order, so both sides reuse the same KV-cache prefix.
    remote = _teacher(fresh_server_url, max_in_flight=1).generate(requests)
    model = LlamaCppModel(served_model, n_ctx=2048, n_threads=1)  # the server's settings (http_support)
    local = [model.generate([r])[0] for r in requests]
    assert [g.text for g in remote] == [g.text for g in local]
    assert [(g.prompt_tokens, g.completion_tokens) for g in remote] == [
        (g.prompt_tokens, g.completion_tokens) for g in local
    ]
    assert all(g.text.strip() for g in remote)


def test_structured_output_through_the_server(server_url: str) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    request = ChatRequest.of(
        [{"role": "user", "content": "What is 2 + 3? Reply in JSON."}], SamplingParams(max_tokens=32), fmt
    )
    # llama-cpp-python's server takes the schema inside json_object and builds a grammar from it.
    reply = _teacher(server_url, structured_output="json_object").generate([request])[0]
    assert isinstance(json.loads(reply.text)["answer"], int)


def test_fault_injection_batch_completes_and_faults_are_counted(server_url: str, tmp_path: Path) -> None:
    requests = _requests(max_tokens=16)

    # Faults by arrival order; each failed attempt is retried and takes the next slot.
    faults = ["429", "500", "hang", "ok", "truncated", "invalid", "slow", "drop"]
    timeout_s = 15.0  # well above a queued 16-token reply on a loaded 2-core machine; the hang lasts past it
    summary_path = tmp_path / "failures.json"
    with FaultProxy(server_url, faults, slow_s=3.0, retry_after="1") as proxy:
        teacher = _teacher(
            proxy.url, max_in_flight=3, timeout_s=timeout_s, max_retries=6, backoff_base_s=0.2, backoff_max_s=1.0,
            slow_warning_s=2.5, failure_summary_path=summary_path,
        )  # fmt: skip
        cache = CallCache(tmp_path / "cache.sqlite")
        replies = CachedModel(teacher, cache).generate(requests)
        injected = dict(proxy.injected)
        delivered = dict(proxy.delivered)
        delivered_text = dict(proxy.delivered_text)
        events = list(proxy.events)

    assert injected == {f: 1 for f in faults if f != "ok"}
    assert delivered == {p: 1 for p in PROMPTS}, events  # exactly one clean delivery per prompt
    # Every sample, once, in order, each the reply the server gave for ITS prompt. (Not compared with a
    # separate run: the server's greedy reply can depend on its KV-cache history, see fresh_server_url.)
    assert [g.text for g in replies] == [delivered_text[p] for p in PROMPTS]
    assert all(g.text.strip() and g.completion_tokens > 0 for g in replies)
    assert len(cache) == len(PROMPTS)
    summary = json.loads(summary_path.read_text())
    by_reason = summary["by_reason"]
    for reason in ("http_429", "http_500", "truncated_json", "invalid_json", "connection_reset"):
        assert by_reason.get(reason) == 1, (reason, summary)
    # A loaded shared machine can add a real slow reply (or, rarely, a real timeout), never remove one.
    assert by_reason.get("timeout", 0) >= 1 and summary["slow_replies"] >= 1
    assert summary["gave_up"] == {}
    assert all(len(v) >= 1 for k, v in summary["examples"].items() if k in by_reason)


def test_diagnosis_and_synthesis_through_http_equal_in_process(
    served_model: Path, fresh_server_url: str, tmp_path: Path
) -> None:
    """The product path, not raw calls: `diagnose` (probe rows, scores) and one synthesis step (samples,
    drops, tokens) with the teacher behind HTTP give what the in-process teacher gives at temperature 0."""
    from ioa.config import config_from_dict
    from ioa.dedup import Decontaminator
    from ioa.diagnosis import diagnose, probe_items, selected_modules
    from ioa.domains import get_domain
    from ioa.models.llamacpp import LlamaCppModel
    from ioa.rundir import RunDir
    from ioa.teaching import DataRequest, synthesise

    config = config_from_dict({
        "name": "http-e2e", "teacher": {"spec": SERVED_MODEL, "max_tokens": 48},
        "student": {"spec": SERVED_MODEL, "max_tokens": 24},
        "domain": {"name": "arithmetic", "modules": ["single_digit_add", "multi_digit_add"]},
        "identifier": {"probes_per_module": 4}, "adapter": {"max_attempts": 2, "teacher_max_tokens": 64},
    })  # fmt: skip
    domain = get_domain(config.domain)
    modules = {m.id: m for m in selected_modules(domain, config.domain.modules)}
    protected = [i.prompt for i in probe_items(domain, list(modules.values()), 4, config.seed)]
    # One student for both runs (served from one cache), so only the teacher's transport differs.
    student = CachedModel(LlamaCppModel(served_model, n_ctx=2048, n_threads=1), CallCache(tmp_path / "student.sqlite"))
    teachers = {
        # One request at a time on both sides: the same order, so the same KV-cache prefix reuse (see above).
        "http": _teacher(fresh_server_url, max_in_flight=1),
        "local": LlamaCppModel(served_model, n_ctx=2048, n_threads=1, n_parallel=1),
    }
    outcome: dict[str, tuple[object, ...]] = {}
    for name, model in teachers.items():
        run = RunDir(tmp_path / name)
        teacher = CachedModel(model, CallCache(run.cache_path))
        found = diagnose(config, run, teacher=teacher, student=student)
        # An answer key (bare) and a worked solution (steps): the small served model keeps some of the first.
        requests = [DataRequest(m, 4, 1, rep) for m, rep in zip(modules, ["bare", "steps"], strict=True)]
        made = synthesise(teacher, domain, modules, requests, config.adapter,
                          Decontaminator(protected, config.adapter.decontam_ngram), seed=7, lineage={})
        outcome[name] = (
            [(r.item_id, r.role, r.response, r.correct) for r in found.rows],
            [s.to_dict() for s in found.scores],
            # Lineage names the teacher, which is the one thing that differs by design.
            [{**s.to_dict(), "lineage": {**s.lineage, "teacher": "-"}} for s in made.samples],
            dict(made.drops), made.generated, made.teacher_tokens,
        )
    assert outcome["http"][0] == outcome["local"][0]  # every probe row, teacher and student
    assert outcome["http"][1] == outcome["local"][1]  # P_T, P_S, gaps, severity, targets
    assert outcome["http"][2:] == outcome["local"][2:]  # samples with lineage, drop reasons, token counts
    assert outcome["http"][2], "no sample was kept: the comparison would be vacuous"
    assert outcome["http"][4] >= 8 and any(r[1] == "teacher" and r[2].strip() for r in outcome["http"][0])

"""HTTP teacher logic without a server: httpx.MockTransport stands in for the endpoints (fast, exact)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from ioa.accounting import Accountant, FailureLog, Price, dry_run_estimate
from ioa.config import HTTPConfig, config_from_dict
from ioa.errors import BudgetExceededError, ConfigError, TeacherReplyError
from ioa.models.base import ChatRequest, SamplingParams
from ioa.models.cache import CachedModel, CallCache, request_key
from ioa.models.http import EndpointError, HTTPChatModel, normalise_base_url, parse_retry_after
from ioa.models.ratelimit import SlidingWindowLimiter
from ioa.models.resolve import load_model


def reply(text: str, prompt_tokens: int = 10, completion_tokens: int = 5) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def user_of(request: httpx.Request) -> str:
    return json.loads(request.content)["messages"][-1]["content"]


def reqs(n: int, max_tokens: int = 8) -> list[ChatRequest]:
    params = SamplingParams(max_tokens=max_tokens)
    return [ChatRequest.of([{"role": "user", "content": f"q{i}"}], params) for i in range(n)]


def model(handler: Any, urls: Any = "http://127.0.0.1:9/v1", **kw: Any) -> HTTPChatModel:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return HTTPChatModel(urls, "m", transport=httpx.MockTransport(handler), trust_env=False, seed=0, **kw)


def test_results_in_order_and_each_reply_reported_when_it_completes() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        i = int(user_of(request)[1:])
        await asyncio.sleep(0.01 * (8 - i))  # later requests finish first
        return httpx.Response(200, json=reply(f"a{i}"))

    seen: list[int] = []
    out = model(handler, max_in_flight=8).generate(reqs(8), on_result=lambda i, g: seen.append(i))
    assert [g.text for g in out] == [f"a{i}" for i in range(8)]
    assert sorted(seen) == list(range(8))
    assert seen[0] == 7 and seen != sorted(seen)  # reported in completion order, not at the end of the batch


def test_retry_after_is_honoured_and_counted(tmp_path: Path) -> None:
    calls = Counter[str]()

    def handler(request: httpx.Request) -> httpx.Response:
        calls[user_of(request)] += 1
        if calls[user_of(request)] == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json=reply("ok"))

    summary = tmp_path / "failures.json"
    start = time.monotonic()
    out = model(handler, failure_summary_path=summary).generate(reqs(1))
    assert time.monotonic() - start >= 1.0
    assert out[0].text == "ok"
    data = json.loads(summary.read_text())
    assert data["by_reason"] == {"http_429": 1} and data["gave_up"] == {}
    assert data["examples"]["http_429"][0]["detail"] == "slow down"


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_non_retryable_errors_stop_with_one_line(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOA_TEST_KEY", "secret-value-123")
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"error": {"message": "nope\nsecond line"}})

    with pytest.raises(EndpointError) as err:
        model(handler, api_key_env="IOA_TEST_KEY", max_in_flight=1).generate(reqs(3))
    message = str(err.value)
    assert "\n" not in message and f"HTTP {status}" in message and "nope second line" in message
    assert "secret-value-123" not in message
    assert len(calls) == 1  # not retried, and nothing new sent after it
    if status == 401:
        assert "$IOA_TEST_KEY" in message
    if status == 404:
        assert "'m'" in message


def test_api_key_is_read_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=reply("ok"))

    monkeypatch.delenv("IOA_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="IOA_TEST_KEY"):
        model(handler, api_key_env="IOA_TEST_KEY").generate(reqs(1))
    monkeypatch.setenv("IOA_TEST_KEY", "k-1")
    model(handler, api_key_env="IOA_TEST_KEY").generate(reqs(1))
    assert seen == ["Bearer k-1"]
    with pytest.raises(ConfigError, match="NAME of the variable"):
        config_from_dict({"teacher": {"spec": "http://127.0.0.1:1", "http": {"api_key_env": "sk_live_abc"}}})


def test_exhausted_retries_fail_after_the_rest_is_cached(tmp_path: Path) -> None:
    broken = {"q1"}
    sent = Counter[str]()

    def handler(request: httpx.Request) -> httpx.Response:
        sent[user_of(request)] += 1
        if user_of(request) in broken:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json=reply("a-" + user_of(request)))

    cache = CallCache(tmp_path / "c.sqlite")
    teacher = CachedModel(model(handler, max_retries=2), cache)
    with pytest.raises(TeacherReplyError, match=r"1 of 4 requests .*\(http_503 ×1\)"):
        teacher.generate(reqs(4))
    assert len(cache) == 3 and sent["q1"] == 3
    broken.clear()
    out = teacher.generate(reqs(4))
    assert [g.text for g in out] == ["a-q0", "a-q1", "a-q2", "a-q3"]
    assert sent == Counter({"q0": 1, "q1": 4, "q2": 1, "q3": 1})  # only the failed one was sent again


def test_retryable_faults_are_classified() -> None:
    calls = Counter[str]()
    faults = ["truncated", "invalid", "reset", "500", "noreply"]

    async def handler(request: httpx.Request) -> httpx.Response:
        n = sum(calls.values())
        calls[user_of(request)] += 1
        fault = faults[n] if n < len(faults) else "ok"
        if fault == "truncated":
            return httpx.Response(200, content=json.dumps(reply("x"))[:20].encode())
        if fault == "invalid":
            return httpx.Response(200, content=b"<html>oops</html>")
        if fault == "reset":
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        if fault == "500":
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if fault == "noreply":
            return httpx.Response(200, json={"object": "error"})
        return httpx.Response(200, json=reply("fine"))

    teacher = model(handler, max_in_flight=1, max_retries=6)
    assert teacher.generate(reqs(1))[0].text == "fine"
    assert dict(teacher.failures.attempts) == {
        "truncated_json": 1, "invalid_json": 1, "connection_reset": 1, "http_500": 1, "invalid_reply": 1,
    }  # fmt: skip


def test_timeout_is_per_request_and_retried() -> None:
    calls = Counter[str]()

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(5)
        return httpx.Response(200, json=reply("late but fine"))

    teacher = model(handler, timeout_s=0.3)
    start = time.monotonic()
    assert teacher.generate(reqs(1))[0].text == "late but fine"
    assert time.monotonic() - start < 3
    assert teacher.failures.attempts == Counter({"timeout": 1})


def test_load_balancing_and_failover() -> None:
    hosts = Counter[str]()

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts[request.url.port] += 1  # type: ignore[index]
        if request.url.port == 3:
            raise httpx.ConnectError("connection refused")
        await asyncio.sleep(0.01)
        return httpx.Response(200, json=reply("ok"))

    rr = model(handler, ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], balance="round_robin", max_in_flight=1)
    rr.generate(reqs(10))
    assert hosts == Counter({1: 5, 2: 5})
    hosts.clear()
    least = model(handler, ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], max_in_flight=4)
    least.generate(reqs(20))
    assert hosts[1] >= 5 and hosts[2] >= 5
    hosts.clear()
    # A dead replica is tried, put in cool-down, and its requests go to the live one.
    failover = model(handler, ["http://127.0.0.1:3/v1", "http://127.0.0.1:1/v1"], max_in_flight=2)
    assert len(failover.generate(reqs(12))) == 12
    assert hosts[1] == 12 and hosts[3] <= 4 and failover.failures.attempts["connect_error"] == hosts[3]


def test_fingerprint_is_per_model_not_per_url() -> None:
    a = HTTPChatModel("http://127.0.0.1:1", "m1", base_model="Qwen/Qwen2.5-7B-Instruct")
    b = HTTPChatModel(["http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1/"], "m1", base_model="Qwen/Qwen2.5-7B-Instruct")
    c = HTTPChatModel("http://127.0.0.1:1", "m2", base_model="Qwen/Qwen2.5-7B-Instruct")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.fingerprint != HTTPChatModel("http://127.0.0.1:1", "m1").fingerprint
    assert [e.url for e in b.endpoints] == ["http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"]
    assert normalise_base_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1"


def test_response_format_in_body_and_cache_key() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=reply('{"answer": 1}'))

    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    req = ChatRequest.of([{"role": "user", "content": "q"}], SamplingParams(max_tokens=8), response_format=fmt)
    for mode in ("json_schema", "json_object", "none"):
        model(handler, structured_output=mode).generate([req])
    assert bodies[0]["response_format"] == fmt
    assert bodies[1]["response_format"] == {"type": "json_object", "schema": schema}
    assert "response_format" not in bodies[2]
    plain = ChatRequest.of([{"role": "user", "content": "q"}], SamplingParams(max_tokens=8))
    legacy = hashlib.sha256(
        json.dumps(
            {"model": "f", "messages": plain.messages, "params": plain.params.as_dict()},
            sort_keys=True, ensure_ascii=False,
        ).encode()
    ).hexdigest()  # fmt: skip
    assert request_key("f", plain) == legacy  # keys of existing (plain) requests did not change
    assert request_key("f", req) != legacy


def test_duplicates_in_a_batch_are_sent_once(tmp_path: Path) -> None:
    sent = Counter[str]()

    def handler(request: httpx.Request) -> httpx.Response:
        sent[user_of(request)] += 1
        return httpx.Response(200, json=reply("a-" + user_of(request)))

    teacher = CachedModel(model(handler), CallCache(tmp_path / "c.sqlite"))
    batch = reqs(3) + reqs(3)
    assert [g.text for g in teacher.generate(batch)] == ["a-q0", "a-q1", "a-q2"] * 2
    assert sent == Counter({"q0": 1, "q1": 1, "q2": 1})


def test_sync_generate_inside_a_running_loop() -> None:
    teacher = model(lambda r: httpx.Response(200, json=reply("ok")))

    async def main() -> list[str]:
        return [g.text for g in teacher.generate(reqs(2))]

    assert asyncio.run(main()) == ["ok", "ok"]


def test_sliding_window_limiter_waits_for_the_window() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def run() -> None:
        limiter = SlidingWindowLimiter(100, window=60, clock=lambda: now[0], sleep=fake_sleep)
        await limiter.acquire(60)
        now[0] = 10.0
        grant = await limiter.acquire(40)
        await limiter.acquire(30)  # must wait until the first 60 leave the window at t=60
        assert now[0] == pytest.approx(60.0)
        grant.settle(5)  # the request used less than it reserved
        await limiter.acquire(60)  # 30 + 5 + 60 ≤ 100: no wait
        assert now[0] == pytest.approx(60.0)

    asyncio.run(run())
    assert slept and sum(slept) == pytest.approx(50.0)


def test_rpm_limit_spaces_requests() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return httpx.Response(200, json=reply("ok"))

    teacher = model(handler, requests_per_minute=2, max_in_flight=4)
    teacher._rpm.window = 1.0  # type: ignore[union-attr]  # a one-second "minute" keeps the test short
    teacher.generate(reqs(4))
    assert times[2] - times[0] >= 0.95 and times[3] - times[1] >= 0.95


def test_dry_run_estimate_and_prices() -> None:
    est = dry_run_estimate(1000, 300, 150.5, Price(prompt_per_mtok=0.5, completion_per_mtok=1.5))
    assert (est.prompt_tokens, est.completion_tokens, est.total_tokens) == (300_000, 150_500, 450_500)
    assert est.cost_usd == pytest.approx(0.15 + 0.22575)
    assert dry_run_estimate(10, 1, 1, None).cost_usd == 0.0
    cfg = config_from_dict({"accounting": {"prices": {"*": {"prompt_per_mtok": 2}}, "max_cost_usd": 1}})
    acc = Accountant.from_config(cfg.accounting)
    assert acc.price_for("anything").prompt_per_mtok == 2.0 and acc.max_cost_usd == 1.0


def test_accounting_per_call_step_run_and_budget_resume(tmp_path: Path) -> None:
    sent = Counter[str]()

    def handler(request: httpx.Request) -> httpx.Response:
        sent[user_of(request)] += 1
        return httpx.Response(200, json=reply("a", prompt_tokens=100, completion_tokens=8))

    ledger = tmp_path / "ledger.jsonl"
    prices = {"m": Price(prompt_per_mtok=1000.0, completion_per_mtok=2000.0)}  # 0.1 + 0.016 $ per call
    cache = CallCache(tmp_path / "c.sqlite")
    # Worst case per call: prompt estimate (≈ 8+8+2//3 = 16 tokens) + max_tokens 8, i.e. ≈ $0.032 reserved.
    acc = Accountant(prices, max_cost_usd=0.5, ledger_path=ledger)
    teacher = CachedModel(model(handler, accountant=acc, max_in_flight=2), cache)
    with acc.step("diagnose"):
        teacher.generate(reqs(2))
    with acc.step("stage-01"), pytest.raises(BudgetExceededError) as err:
        teacher.generate(reqs(10))
    assert "\n" not in str(err.value) and "raise accounting.max_cost_usd" in str(err.value)
    assert acc.run.cost_usd <= 0.5  # the cap is hard
    done = len(cache)
    assert acc.run.calls == done and 2 < done < 10
    assert acc.by_step["diagnose"].calls == 2 and acc.by_step["stage-01"].calls == done - 2
    assert acc.by_step["diagnose"].prompt_tokens == 200 and acc.by_step["diagnose"].completion_tokens == 16
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(lines) == done and set(cache.get_many([line["key"] for line in lines])) == {x["key"] for x in lines}
    with pytest.raises(BudgetExceededError):
        acc.check()
    # Resume in a new process with a larger cap: the ledger restores the spend, the cache the replies.
    acc2 = Accountant(prices, max_cost_usd=5.0, ledger_path=ledger)
    assert acc2.run.calls == done and acc2.run.cost_usd == pytest.approx(acc.run.cost_usd)
    teacher2 = CachedModel(model(handler, accountant=acc2), CallCache(tmp_path / "c.sqlite"))
    with acc2.step("stage-01"):
        assert len(teacher2.generate(reqs(10))) == 10
    assert all(n == 1 for n in sent.values()) and len(sent) == 10  # nothing paid twice
    assert acc2.run.calls == 10 and acc2.summary()["by_step"]["stage-01"]["calls"] == 8
    acc2.write_summary(tmp_path / "acct.json")
    assert json.loads((tmp_path / "acct.json").read_text())["run"]["calls"] == 10


def test_failure_log_summary(tmp_path: Path) -> None:
    log = FailureLog(max_examples=2)
    for n in range(5):
        log.record("http_500", endpoint="u", attempt=n + 1)
    log.record("timeout", final=True, endpoint="u")
    log.record_slow(3.2, endpoint="u")
    log.write(tmp_path / "f.json")
    data = json.loads((tmp_path / "f.json").read_text())
    assert data["by_reason"] == {"http_500": 5, "timeout": 1} and data["gave_up"] == {"timeout": 1}
    assert len(data["examples"]["http_500"]) == 2 and data["slow_replies"] == 1


def test_load_model_builds_the_http_backend() -> None:
    cfg = HTTPConfig(model="teacher", endpoints=["http://127.0.0.1:2"], max_in_flight=3, dialect="llama.cpp")
    teacher = load_model("http://127.0.0.1:1/v1", http=cfg)
    assert isinstance(teacher, HTTPChatModel)
    assert [e.url for e in teacher.endpoints] == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert teacher.max_in_flight == 3 and teacher.name == "teacher"
    two = load_model("http://127.0.0.1:1,http://127.0.0.1:4", http=HTTPConfig(model="t"))
    assert len(two.endpoints) == 2  # type: ignore[attr-defined]


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)

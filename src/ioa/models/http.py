"""OpenAI-compatible HTTP teacher: vLLM, SGLang, llama.cpp's llama-server, llama_cpp.server, hosted APIs.

One `HTTPChatModel` spreads a batch over one or more endpoints serving the same model, with a bounded
number of requests in flight, per-request timeouts, requests/tokens-per-minute limits, and retries of the
errors that retrying can fix (429, 5xx, timeouts, dropped connections, truncated or invalid JSON bodies)
with jittered exponential back-off that honours Retry-After. Errors that retrying cannot fix (400, 401,
403, 404) stop the batch with one clear line. Each reply is handed to `on_result` the moment it
completes, which is how CachedModel commits it to the call cache before anything else can go wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

from ioa.errors import BudgetExceededError, ConfigError, IoaError, ModelNotFoundError, TeacherReplyError
from ioa.models.base import ChatRequest, Generation
from ioa.models.cache import request_key
from ioa.models.ratelimit import Grant, SlidingWindowLimiter

if TYPE_CHECKING:
    from ioa.accounting import Accountant, FailureLog
    from ioa.config import HTTPConfig

log = logging.getLogger(__name__)

OnResult = Callable[[int, Generation], None]
Balance = Literal["least_in_flight", "round_robin"]
StructuredOutput = Literal["json_schema", "json_object", "none"]
Dialect = Literal["openai", "llama.cpp"]

_RETRYABLE_4XX = {408, 409, 425, 429}
_RETRY_AFTER_CAP_S = 900.0  # a server asking for more than 15 min is misconfigured; do not stall a run for it


class EndpointError(IoaError):
    """An endpoint refused a request for a reason that retrying cannot fix (400, 401, 403, 404, ...)."""

    def __init__(self, problem: str, fix: str = "", status: int = 0) -> None:
        super().__init__(problem, fix)
        self.status = status


class _AttemptFailed(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


def normalise_base_url(url: str) -> str:
    """`http://host:8000`, `http://host:8000/v1/` and `.../v1/chat/completions` all mean `.../v1`."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelNotFoundError(f"{url!r} is not an http(s) URL", "use e.g. http://127.0.0.1:8000/v1")
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    if parts.path in ("", "/"):
        url += "/v1"
    return url


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP_S)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A deliberately high estimate (≈3 chars per token + template overhead) for budget/TPM reservations."""
    chars = sum(len(content) for _, content in request.messages)
    return chars // 3 + 8 * len(request.messages) + 8


def model_fingerprint(base_model: str, endpoint_model: str) -> str:
    """Cache identity of a served model: the same weights under the same id share one cache, whatever the
    URL or number of replicas; another model (or a renamed one) gets fresh keys."""
    return hashlib.sha256(json.dumps(["http", base_model, endpoint_model]).encode()).hexdigest()


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    sent: int = 0
    cooldown_until: float = 0.0
    failures: int = 0  # consecutive failed attempts; reset by a success


@dataclass
class _Batch:
    """Shared state of one `agenerate` call."""

    stop: bool = False
    fatal: BaseException | None = None
    budget: BudgetExceededError | None = None
    failed: list[tuple[int, _AttemptFailed]] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # wakes workers sleeping in back-off

    def halt(self, exc: BaseException) -> None:
        # The first reason to stop wins; workers finish the attempt in progress (so those replies are
        # still delivered and cached) but send nothing new.
        self.stop = True
        self.stopped.set()
        if isinstance(exc, BudgetExceededError):
            self.budget = self.budget or exc
        elif self.fatal is None:
            self.fatal = exc


class HTTPChatModel:
    """A ChatModel served over an OpenAI-compatible `/v1/chat/completions` API."""

    supports_on_result = True  # CachedModel passes `on_result` to commit each reply as it completes

    def __init__(
        self,
        urls: str | Sequence[str],
        model: str | None = None,
        *,
        base_model: str | None = None,
        name: str | None = None,
        api_key_env: str | None = None,
        max_in_flight: int = 8,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        balance: Balance = "least_in_flight",
        structured_output: StructuredOutput = "json_schema",
        dialect: Dialect = "openai",
        extra_body: Mapping[str, Any] | None = None,
        slow_warning_s: float | None = None,
        failure_summary_path: Path | None = None,
        accountant: Accountant | None = None,
        failures: FailureLog | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
        seed: int | None = None,
    ) -> None:
        from ioa.accounting import FailureLog

        url_list = [urls] if isinstance(urls, str) else list(urls)
        if not url_list:
            raise ModelNotFoundError("no endpoint URL given for the HTTP teacher", "give at least one URL")
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1, got {max_in_flight}", "set it to 1 or more")
        self.endpoints = [_Endpoint(normalise_base_url(u)) for u in dict.fromkeys(url_list)]
        self._model_id = model
        self.base_model = base_model
        self._name = name
        self.api_key_env = api_key_env  # the NAME of the variable; the key itself is never stored
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.balance = balance
        self.structured_output = structured_output
        self.dialect = dialect
        self.extra_body = dict(extra_body or {})
        self.slow_warning_s = slow_warning_s
        self.failure_summary_path = Path(failure_summary_path) if failure_summary_path else None
        self.accountant = accountant
        self.failures = failures or (accountant.failures if accountant is not None else FailureLog())
        self._transport = transport
        self._trust_env = trust_env
        self._rng = random.Random(seed)
        self._rpm = SlidingWindowLimiter(requests_per_minute) if requests_per_minute else None
        self._tpm = SlidingWindowLimiter(tokens_per_minute) if tokens_per_minute else None
        self._rr = 0
        self._warned_usage = False
        # Calibrates the prompt-token estimate from real usage (chat templates add unseen tokens, e.g. a
        # default system prompt), so budget and TPM reservations stay worst-case after the first replies.
        self._prompt_ratio = 1.0

    @classmethod
    def from_config(
        cls, spec: str, config: HTTPConfig | None = None, accountant: Accountant | None = None
    ) -> HTTPChatModel:
        """`spec` is one URL or several separated by commas; `config.endpoints` adds more replicas."""
        from ioa.config import HTTPConfig

        cfg = config or HTTPConfig()
        urls = [u for u in (s.strip() for s in spec.split(",")) if u] + list(cfg.endpoints)
        return cls(
            urls,
            cfg.model,
            base_model=cfg.base_model,
            name=cfg.name,
            api_key_env=cfg.api_key_env,
            max_in_flight=cfg.max_in_flight,
            timeout_s=cfg.timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
            max_retries=cfg.max_retries,
            backoff_base_s=cfg.backoff_base_s,
            backoff_max_s=cfg.backoff_max_s,
            requests_per_minute=cfg.requests_per_minute,
            tokens_per_minute=cfg.tokens_per_minute,
            balance=cfg.balance,
            structured_output=cfg.structured_output,
            dialect=cfg.dialect,
            extra_body=cfg.extra_body,
            slow_warning_s=cfg.slow_warning_s,
            failure_summary_path=cfg.failure_summary,
            accountant=accountant,
        )

    # -- identity --------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """The id sent as `model`; asked from the first endpoint's /models when not configured."""
        if self._model_id is None:
            self._model_id = self._discover_model_id()
        return self._model_id

    @property
    def name(self) -> str:
        return self._name or self.base_model or self.model_id

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.base_model or self.model_id, self.model_id)

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "ioa"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(
                    f"environment variable {self.api_key_env} (the teacher's API key) is not set",
                    f"export {self.api_key_env}=<key>, or remove http.api_key_env for a server without keys",
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _discover_model_id(self) -> str:
        url = self.endpoints[0].url + "/models"
        try:
            with httpx.Client(timeout=self.connect_timeout_s, trust_env=self._trust_env) as client:
                response = client.get(url, headers=self._headers())
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelNotFoundError(
                f"could not read the model id from {url}: {_one_line(str(exc)) or type(exc).__name__}",
                "check that the server is up, or set http.model to the endpoint's model id",
            ) from None

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[Generation]:
        """Answer each request, in order. `on_result(i, generation)` runs as soon as request i completes."""
        if not requests:
            return []
        _ = self.model_id  # resolve (a blocking call) before entering the event loop
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, on_result))
        # Called from inside a running event loop (a notebook, an async app): run ours on a worker thread.
        with ThreadPoolExecutor(1, thread_name_prefix="ioa-http") as pool:
            return pool.submit(asyncio.run, self.agenerate(requests, on_result)).result()

    async def agenerate(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[Generation]:
        if not requests:
            return []
        if self._model_id is None:
            await asyncio.to_thread(lambda: self.model_id)
        results: list[Generation | None] = [None] * len(requests)
        batch = _Batch()
        pending = iter(range(len(requests)))
        try:
            async with self._client() as client:
                workers = [
                    asyncio.create_task(self._worker(client, requests, results, pending, on_result, batch))
                    for _ in range(min(self.max_in_flight, len(requests)))
                ]
                try:
                    await asyncio.gather(*workers)
                except BaseException:
                    for w in workers:
                        w.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    raise
        finally:
            if self.failure_summary_path is not None:
                self.failures.write(self.failure_summary_path)
        if batch.fatal is not None:
            raise batch.fatal
        if batch.budget is not None:
            raise batch.budget
        if batch.failed:
            reasons: dict[str, int] = {}
            for _, failure in batch.failed:
                reasons[failure.reason] = reasons.get(failure.reason, 0) + 1
            listed = ", ".join(f"{r} ×{n}" for r, n in sorted(reasons.items()))
            raise TeacherReplyError(
                f"{len(batch.failed)} of {len(requests)} requests to {self.name} failed after "
                f"{self.max_retries + 1} attempts ({listed}); last: {_one_line(batch.failed[-1][1].detail)}",
                "the replies that completed are saved; rerun to retry only the failed ones, or raise "
                "http.max_retries / http.timeout_s",
            )
        return [r for r in results if r is not None]

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=self._headers(),
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_in_flight + len(self.endpoints),
                max_keepalive_connections=self.max_in_flight,
            ),
            transport=self._transport,
            trust_env=self._trust_env,
        )

    async def _worker(
        self,
        client: httpx.AsyncClient,
        requests: Sequence[ChatRequest],
        results: list[Generation | None],
        pending: Any,
        on_result: OnResult | None,
        batch: _Batch,
    ) -> None:
        # A fixed pool of workers (not one task per request): memory stays flat for huge batches, and the
        # pool size IS the number of requests in flight.
        for i in pending:
            if batch.stop:
                return
            try:
                done = await self._one(client, requests[i], i, batch)
                if done is None:
                    continue
                generation, reservation = done
                results[i] = generation
                try:
                    if on_result is not None:
                        on_result(i, generation)  # durable write first: nothing may come between reply and it
                except BaseException:
                    if self.accountant is not None and reservation is not None:
                        self.accountant.release(reservation)
                    raise
                if self.accountant is not None and reservation is not None:
                    # The ledger line carries the cache key, so every paid call can be traced to its row.
                    self.accountant.commit(reservation, generation, key=request_key(self.fingerprint, requests[i]))
            except (EndpointError, ConfigError, BudgetExceededError) as exc:
                batch.halt(exc)
                return
            except Exception as exc:  # e.g. the cache could not write: stop cleanly, report it
                log.error("stopping the batch: %s", exc)
                batch.halt(exc)
                return

    async def _one(
        self, client: httpx.AsyncClient, request: ChatRequest, index: int, batch: _Batch
    ) -> tuple[Generation, Any] | None:
        body = self.request_body(request)
        raw_estimate = estimate_prompt_tokens(request)
        attempt = 0
        avoid: _Endpoint | None = None
        while True:
            if batch.stop:
                return None
            est_prompt = math.ceil(raw_estimate * self._prompt_ratio)
            reservation = None
            if self.accountant is not None:
                reservation = self.accountant.reserve(self.name, est_prompt, request.params.max_tokens)
            grant: Grant | None = None
            try:
                if self._rpm is not None:
                    await self._rpm.acquire(1)
                if self._tpm is not None:
                    grant = await self._tpm.acquire(est_prompt + request.params.max_tokens)
                endpoint = await self._pick_endpoint(avoid)
            except BaseException:
                if reservation is not None and self.accountant is not None:
                    self.accountant.release(reservation)
                raise
            endpoint.in_flight += 1
            started = time.monotonic()
            failure: _AttemptFailed
            try:
                generation = await asyncio.wait_for(
                    self._post(client, endpoint, body, request, est_prompt), self.timeout_s
                )
            except _AttemptFailed as exc:
                failure = exc
            except (asyncio.TimeoutError, httpx.TimeoutException):
                failure = _AttemptFailed("timeout", f"no complete reply within {self.timeout_s:g} s")
            except httpx.ConnectError as exc:
                failure = _AttemptFailed("connect_error", _one_line(str(exc)) or "connection refused")
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                failure = _AttemptFailed("connection_reset", _one_line(str(exc)) or type(exc).__name__)
            except httpx.TransportError as exc:
                failure = _AttemptFailed("transport_error", _one_line(str(exc)) or type(exc).__name__)
            except BaseException:
                if reservation is not None and self.accountant is not None:
                    self.accountant.release(reservation)
                raise
            else:
                seconds = time.monotonic() - started
                endpoint.failures = 0
                self._prompt_ratio = max(self._prompt_ratio, generation.prompt_tokens / max(1, raw_estimate))
                if grant is not None:
                    grant.settle(generation.prompt_tokens + generation.completion_tokens)
                if self.slow_warning_s is not None and seconds > self.slow_warning_s:
                    self.failures.record_slow(seconds, endpoint=endpoint.url, request=index)
                    log.info("slow reply from %s: %.1f s (request %d)", endpoint.url, seconds, index)
                return generation, reservation
            finally:
                endpoint.in_flight -= 1

            if reservation is not None and self.accountant is not None:
                self.accountant.release(reservation)
            final = attempt >= self.max_retries
            self.failures.record(
                failure.reason,
                final=final,
                endpoint=endpoint.url,
                request=index,
                attempt=attempt + 1,
                detail=_one_line(failure.detail)[:300],
            )
            if final:
                log.warning("request %d failed for good after %d attempts: %s", index, attempt + 1, failure)
                batch.failed.append((index, failure))
                return None
            delay = self._backoff(attempt, failure.retry_after)
            endpoint.failures += 1
            avoid = endpoint  # retry on another replica when there is one
            if failure.retry_after is not None:
                # The server asked everyone to wait: no request goes there before then.
                endpoint.cooldown_until = max(endpoint.cooldown_until, time.monotonic() + delay)
            elif failure.reason == "connect_error":
                # Down (or restarting): keep traffic away for a while that grows with each failure.
                pause = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(endpoint.failures, 16))
                endpoint.cooldown_until = max(endpoint.cooldown_until, time.monotonic() + pause)
            log.info("retrying request %d in %.2f s after %s (attempt %d)", index, delay, failure, attempt + 1)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(batch.stopped.wait(), delay)  # a halted batch does not wait out back-offs
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # Honour the server's wait, plus a little jitter so the waiting requests do not return at once.
            return retry_after + self._rng.uniform(0.0, 0.1 * retry_after + 0.05)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return cap / 2 + self._rng.uniform(0.0, cap / 2)  # "equal jitter": never ~0, never synchronized

    async def _pick_endpoint(self, avoid: _Endpoint | None = None) -> _Endpoint:
        while True:
            now = time.monotonic()
            ready = [e for e in self.endpoints if e.cooldown_until <= now]
            if len(ready) > 1 and avoid in ready:
                ready.remove(avoid)
            if ready:
                if self.balance == "round_robin":
                    chosen = ready[self._rr % len(ready)]
                    self._rr += 1
                else:  # least in flight; ties go to the least used, i.e. round-robin among idle replicas
                    chosen = min(ready, key=lambda e: (e.in_flight, e.sent))
                chosen.sent += 1
                return chosen
            await asyncio.sleep(max(0.001, min(e.cooldown_until for e in self.endpoints) - now))

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": request.message_dicts,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": p.seed,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if self.dialect == "llama.cpp":
            # llama_cpp.server defaults repeat_penalty to 1.1 while in-process llama-cpp-python (and
            # llama-server) use 1.0: without this the same greedy request gives a different reply.
            body["repeat_penalty"] = 1.0
        if (fmt := self._response_format(request.response_format)) is not None:
            body["response_format"] = fmt
        body.update(self.extra_body)
        return body

    def _response_format(self, fmt: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if fmt is None or self.structured_output == "none":
            return None
        fmt = dict(fmt)
        if self.structured_output == "json_object" and fmt.get("type") == "json_schema":
            # llama-cpp-python's server takes a schema inside json_object (a grammar is built from it).
            schema = (fmt.get("json_schema") or {}).get("schema")
            return {"type": "json_object", **({"schema": schema} if schema is not None else {})}
        return fmt

    async def _post(
        self,
        client: httpx.AsyncClient,
        endpoint: _Endpoint,
        body: dict[str, Any],
        request: ChatRequest,
        est_prompt: int,
    ) -> Generation:
        started = time.monotonic()
        response = await client.post(endpoint.url + "/chat/completions", json=body)
        status = response.status_code
        if status >= 400 or status < 200:
            detail = _error_detail(response)
            if status in _RETRYABLE_4XX or status >= 500:
                raise _AttemptFailed(f"http_{status}", detail, parse_retry_after(response.headers.get("retry-after")))
            raise EndpointError(
                f"{endpoint.url} refused the request with HTTP {status}: {detail}",
                _fix_for(status, self.api_key_env, self.model_id),
                status=status,
            )
        return self._parse(response.content, time.monotonic() - started, request, est_prompt)

    def _parse(self, content: bytes, seconds: float, request: ChatRequest, est_prompt: int) -> Generation:
        try:
            data = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            text = content.decode("utf-8", "replace").strip()
            # A body that opens a JSON object but never closes it was cut off in transit.
            reason = "truncated_json" if text.startswith("{") and not text.endswith("}") else "invalid_json"
            raise _AttemptFailed(reason, f"{exc}; body starts {text[:80]!r}") from None
        try:
            choice = data["choices"][0]
            text_out = choice["message"].get("content") or ""
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _AttemptFailed("invalid_reply", f"no choices[0].message in {str(data)[:120]}") from None
        usage = data.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            if not self._warned_usage:
                self._warned_usage = True
                log.warning("%s returns no token usage; accounting uses estimates", self.name)
            prompt_tokens, completion_tokens = est_prompt, max(1, len(text_out) // 3)
        return Generation(
            text=str(text_out),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=str(finish),
            seconds=seconds,
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_detail(response: httpx.Response) -> str:
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
        text = message if isinstance(message, str) else json.dumps(message)
    except (ValueError, AttributeError):
        text = response.text
    return _one_line(text)[:200] or response.reason_phrase or "no detail"


def _fix_for(status: int, api_key_env: str | None, model_id: str) -> str:
    if status in (401, 403):
        where = f"the key in ${api_key_env}" if api_key_env else "http.api_key_env (no key was sent)"
        return f"check {where}"
    if status == 404:
        return f"check the URL (it should end in /v1) and the model id {model_id!r} (GET /v1/models lists them)"
    if status in (400, 422):
        return (
            "the server rejected the request itself: check max_tokens against its context size, and set "
            "http.structured_output to json_object or none if it does not support json_schema"
        )
    return "retrying will not help; check the endpoint"

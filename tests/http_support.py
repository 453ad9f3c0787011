"""Helpers for the HTTP teacher tests: a real llama_cpp.server, a fault-injecting proxy, a crash driver.

Everything listens on 127.0.0.1 only, and every wait is bounded.

Run as a script (`python tests/http_support.py drive ...`) it is the client side of the kill -9 test:
it sends `crash_requests()` through HTTPChatModel + CachedModel and writes the replies to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVED_MODEL = "smollm2-135m"  # the fast student model is the served one in tests (2 shared CPU cores)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `condition` until true; fail with `what` after `timeout` seconds (never loops forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


# -- a real llama_cpp.server -----------------------------------------------------------------------------


@contextlib.contextmanager
def llama_cpp_server(model_path: Path, alias: str, n_ctx: int = 2048, startup_s: float = 180.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free loopback port; yield its base URL (…/v1); kill it after."""
    port = free_port()
    log_file = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"ioa-llama-server-{port}.log", "w+")  # noqa: SIM115
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", alias,
        "--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx),
        # One thread: on the shared, oversubscribed CPU, two llama.cpp threads wait on each other at every
        # barrier (measured ≈10× slower, prompts at 2 tokens/s).
        "--n_threads", "1", "--n_threads_batch", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                log_file.seek(0)
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log_file.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/models", timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama_cpp.server did not answer /v1/models within {startup_s:g} s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log_file.close()


# -- the fault-injecting proxy ---------------------------------------------------------------------------

FAULTS = ("429", "500", "hang", "truncated", "invalid", "slow", "drop")


def _not_injected(record: logging.LogRecord) -> bool:
    return not (record.exc_info and "injected" in str(record.exc_info[1]))


def echo_text(prompt: str) -> str:
    return f"echo: {prompt}"


def last_user(body: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


class FaultProxy:
    """A loopback OpenAI-compatible proxy (starlette Request/Response served by uvicorn in a thread).

    Each POST /v1/chat/completions takes the next fault from `faults` ("ok" once they run out):
      429       answer 429 with Retry-After (nothing reaches the upstream)
      500       answer 500
      hang      answer nothing until the client gives up (past its timeout)
      truncated forward, then return only the first half of the upstream's JSON body
      invalid   forward, then return a non-JSON body with status 200
      slow      forward, then wait `slow_s` before answering (a success, just late)
      drop      forward, then cut the connection in the middle of the body (connection reset)
    The upstream is a real server (`upstream` URL) or, with `echo=True`, a tiny deterministic echo model
    that lives in the proxy itself.

    Counters: `upstream_started` / `upstream_done` count requests that reached / completed at the upstream;
    `delivered[prompt]` counts clean (ok/slow) replies fully sent. A gate (`close_gate`) holds new requests
    before they reach the upstream; `discard_held` answers the held ones 503 without forwarding them.
    """

    def __init__(
        self,
        upstream: str | None = None,
        faults: Sequence[str] = (),
        *,
        echo: bool = False,
        echo_delay_s: float = 0.0,
        slow_s: float = 2.0,
        retry_after: str = "1",
        hang_max_s: float = 120.0,
    ) -> None:
        if (upstream is None) == (not echo):
            raise ValueError("give an upstream URL or echo=True (not both)")
        unknown = set(faults) - {*FAULTS, "ok"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.upstream = upstream.rstrip("/") if upstream else None
        self.faults = collections.deque(faults)
        self.echo = echo
        self.echo_delay_s = echo_delay_s
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.hang_max_s = hang_max_s
        self.received = 0
        self.injected: collections.Counter[str] = collections.Counter()
        self.upstream_started = 0
        self.upstream_done = 0
        self.delivered: collections.Counter[str] = collections.Counter()
        self.delivered_text: dict[str, str] = {}  # prompt → reply text of its clean delivery
        self.held = 0
        self.abandoned = 0  # replies produced after their client had gone
        self.events: list[tuple[str, str, str]] = []  # (fault, prompt, outcome) per request, for diagnosis
        self._gate_open = True
        self._gate_epoch = 0
        self._closing = False
        self._client: httpx.AsyncClient | None = None
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/v1"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def upstream_in_progress(self) -> int:
        return self.upstream_started - self.upstream_done

    # -- control (called from the test thread) --
    def close_gate(self) -> None:
        self._gate_open = False

    def discard_held(self) -> None:
        """Answer every held request 503 without forwarding it, then reopen the gate."""
        self._gate_epoch += 1
        self._gate_open = True

    def start(self) -> FaultProxy:
        import uvicorn

        config = uvicorn.Config(
            self._asgi, host=HOST, port=self.port, log_level="error", lifespan="off",
            timeout_graceful_shutdown=2, access_log=False, interface="asgi3",
        )  # fmt: skip
        # The "drop" fault raises on purpose; keep uvicorn from printing a traceback for each one.
        logging.getLogger("uvicorn.error").addFilter(_not_injected)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fault-proxy", daemon=True)
        self._thread.start()
        wait_until(lambda: bool(self._server.started), 20, "the fault proxy to start")
        return self

    def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the ASGI app (runs on the proxy's event loop) --
    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response

        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = scope["path"]
        if request.method == "GET" and path.endswith("/models"):
            if self.echo:
                await JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})(
                    scope, receive, send
                )
            else:
                upstream = await self._http().get(self.upstream + "/models")
                await Response(upstream.content, upstream.status_code, media_type="application/json")(
                    scope, receive, send
                )
            return
        if request.method != "POST" or not path.endswith("/chat/completions"):
            await JSONResponse({"error": {"message": f"no route {path}"}}, 404)(scope, receive, send)
            return
        raw = await request.body()
        body = json.loads(raw)
        self.received += 1
        fault = self.faults.popleft() if self.faults else "ok"
        if fault != "ok":
            self.injected[fault] += 1
        if fault == "429":
            response: Response = JSONResponse(
                {"error": {"message": "rate limited (injected)"}}, 429, headers={"Retry-After": self.retry_after}
            )
            await response(scope, receive, send)
            return
        if fault == "500":
            await JSONResponse({"error": {"message": "internal error (injected)"}}, 500)(scope, receive, send)
            return
        if fault == "hang":
            deadline = time.monotonic() + self.hang_max_s
            while not self._closing and time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            await JSONResponse({"error": {"message": "hung (injected)"}}, 504)(scope, receive, send)
            return
        # Hold at the gate before anything reaches the upstream.
        epoch = self._gate_epoch
        if not self._gate_open:
            self.held += 1
            try:
                while not self._gate_open and epoch == self._gate_epoch and not self._closing:
                    await asyncio.sleep(0.005)
            finally:
                self.held -= 1
            if epoch != self._gate_epoch or self._closing:
                await JSONResponse({"error": {"message": "discarded at the gate"}}, 503)(scope, receive, send)
                return
        self.upstream_started += 1
        try:
            status, content = await self._upstream_call(body, raw)
        finally:
            self.upstream_done += 1
        if fault == "truncated":
            content = content[: max(1, len(content) // 2)]
        elif fault == "invalid":
            content = b"<html><body>502 Bad Gateway (injected)</body></html>"
        elif fault == "slow":
            await asyncio.sleep(self.slow_s)
        elif fault == "drop":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(content)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": content[: len(content) // 3], "more_body": True})
            raise ConnectionResetError("connection dropped (injected)")  # uvicorn closes the socket
        if await request.is_disconnected():  # the client gave up (timed out): this reply reaches no one
            self.abandoned += 1
            self.events.append((fault, last_user(body), "abandoned"))
            return
        # Counted BEFORE sending: once the bytes are out, the client may finish its whole batch (and the test
        # read these counters) before this coroutine runs again.
        self.events.append((fault, last_user(body), f"sent {status}"))
        if fault in ("ok", "slow") and status == 200:
            self.delivered[last_user(body)] += 1
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                self.delivered_text[last_user(body)] = json.loads(content)["choices"][0]["message"]["content"]
        await Response(content, status, media_type="application/json")(scope, receive, send)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=600, trust_env=False)
        return self._client

    async def _upstream_call(self, body: dict[str, Any], raw: bytes) -> tuple[int, bytes]:
        if self.echo:
            if self.echo_delay_s:
                await asyncio.sleep(self.echo_delay_s)
            prompt = last_user(body)
            text = echo_text(prompt)
            reply = {
                "id": "echo",
                "object": "chat.completion",
                "model": "echo",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": len(prompt.split()) + 5,
                    "completion_tokens": len(text.split()),
                    "total_tokens": len(prompt.split()) + 5 + len(text.split()),
                },
            }
            return 200, json.dumps(reply).encode()
        assert self.upstream is not None
        upstream = await self._http().post(
            self.upstream + "/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
        return upstream.status_code, upstream.content


# -- the kill -9 driver ----------------------------------------------------------------------------------


def crash_requests(n: int = 200, distinct: int = 180) -> list[Any]:
    """`n` requests over `distinct` prompts (the repeats check that a batch never pays twice either)."""
    from ioa.models.base import ChatRequest, SamplingParams

    params = SamplingParams(max_tokens=16)
    prompts = [f"question {i % distinct}: what is {i % distinct} + {(7 * i) % distinct}?" for i in range(n)]
    return [ChatRequest.of([{"role": "user", "content": p}], params) for p in prompts]


def cache_rows(path: Path) -> int:
    """Rows in a CallCache file, read by another process (WAL lets readers in while the writer works)."""
    if not Path(path).exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def _drive(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args(argv)
    from ioa.models.cache import CachedModel, CallCache
    from ioa.models.http import HTTPChatModel

    requests = crash_requests()
    model = CachedModel(
        HTTPChatModel(args.url, "echo", max_in_flight=args.in_flight, timeout_s=60, max_retries=8,
                      backoff_base_s=0.05, backoff_max_s=0.5, trust_env=False),
        CallCache(args.cache),
    )  # fmt: skip
    replies = model.generate(requests)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"texts": [g.text for g in replies], "misses": model.misses, "hits": model.hits}))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "drive":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        logging.basicConfig(level=logging.WARNING)
        raise SystemExit(_drive(sys.argv[2:]))
    raise SystemExit("usage: python tests/http_support.py drive URL --cache FILE --out FILE")

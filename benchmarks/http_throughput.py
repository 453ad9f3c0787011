"""Throughput of ioa's HTTP teacher vs a bare asyncio + httpx client, against ONE llama.cpp server.

The server is llama.cpp's native `llama-server` with 4 parallel slots and continuous batching, built by
`scripts/build_llama_server.sh` (falls back to llama_cpp.server, which serialises requests, if the binary
is missing; the JSON says which). Both clients send the same requests (same JSON bodies, same concurrency);
rounds are interleaved (ioa, bare, bare, ioa, ...) so machine-load drift hits both alike. `ignore_eos`
makes every request generate exactly `max_tokens`, so both clients do the same work.

    .venv/bin/python benchmarks/http_throughput.py [--rounds 3 --prompts 16 --max-tokens 64 --parallel 4]

Prints the ioa/bare ratio (target ≥ 0.9) and aggregate vs single-stream tokens/s, and writes
benchmarks/results/http_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from ioa.models.base import ChatRequest, SamplingParams
from ioa.models.http import HTTPChatModel
from ioa.models.registry import embedded, installed_path, ioa_home

log = logging.getLogger("http_throughput")
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]

TOPICS = [
    "why the sky is blue", "how a bicycle stays upright", "what a prime number is", "how bees make honey",
    "why ice floats", "how a compass works", "what photosynthesis does", "how a rainbow forms",
    "why we have seasons", "how vaccines work", "what an atom is", "how a lever helps lift things",
    "why bread rises", "how sound travels", "what gravity does", "how a battery stores energy",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(model_path: Path, alias: str, parallel: int, n_ctx: int, threads: int) -> Iterator[tuple[str, str]]:
    """Start llama-server (or the llama_cpp.server fallback) on loopback; yield (base URL, server kind)."""
    binary = ioa_home() / "llama-server" / "llama-server"
    port = free_port()
    if binary.exists():
        kind = "llama-server"
        # -c is the TOTAL context, shared by the slots: give each slot n_ctx.
        cmd = [str(binary), "-m", str(model_path), "--host", HOST, "--port", str(port), "-a", alias,
               "-np", str(parallel), "-c", str(n_ctx * parallel), "-t", str(threads), "-tb", str(threads),
               "--cont-batching"]  # fmt: skip
    else:
        kind = "llama_cpp.server (fallback: serialises requests, no batching gain)"
        log.warning("%s not built (scripts/build_llama_server.sh): falling back to llama_cpp.server", binary)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", alias,
               "--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads)]  # fmt: skip
    logfile = tempfile.NamedTemporaryFile("w+", prefix="ioa-bench-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                logfile.seek(0)
                raise RuntimeError(f"{kind} exited with {proc.returncode}: {logfile.read()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/models", timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} did not come up within 300 s")
            time.sleep(0.25)
        yield url, kind
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        logfile.close()


def make_requests(n: int, max_tokens: int) -> list[ChatRequest]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
    return [
        ChatRequest.of([{"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]} to a child. ({i})"}], params)
        for i in range(n)
    ]


def run_ioa(model: HTTPChatModel, requests: Sequence[ChatRequest]) -> tuple[int, float]:
    start = time.perf_counter()
    replies = model.generate(requests)
    return sum(g.completion_tokens for g in replies), time.perf_counter() - start


async def _bare(url: str, bodies: Sequence[dict[str, Any]], concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, trust_env=False, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def one(body: dict[str, Any]) -> int:
            async with sem:
                r = await c.post(url + "/chat/completions", json=body)
                r.raise_for_status()
                return int(r.json()["usage"]["completion_tokens"])

        return sum(await asyncio.gather(*(one(b) for b in bodies)))


def run_bare(url: str, bodies: Sequence[dict[str, Any]], concurrency: int) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = asyncio.run(_bare(url, bodies, concurrency))
    return tokens, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="embedded model name served")
    parser.add_argument("--parallel", type=int, default=4, help="server slots = requests in flight")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--single", type=int, default=4, help="requests per single-stream pass")
    # One thread: on a shared, oversubscribed CPU llama.cpp's threads wait on each other at every barrier
    # (measured here: 2 threads 4 tok/s, 1 thread 45 tok/s at load average 10 on 2 cores).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "http_throughput.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    path = installed_path(embedded(args.model))
    if path is None:
        raise SystemExit(f"{args.model} is not installed: run `ioa models install {args.model}`")
    requests = make_requests(args.prompts, args.max_tokens)
    extra = {"ignore_eos": True}  # both clients: exactly max_tokens per request, the same work
    load_before = os.getloadavg()
    with serve(path, args.model, args.parallel, args.n_ctx, args.threads) as (url, kind):
        teacher = HTTPChatModel(url, args.model, max_in_flight=args.parallel, extra_body=extra, trust_env=False)
        bodies = [teacher.request_body(r) for r in requests]  # byte-for-byte the JSON ioa sends
        log.info("server: %s at %s; warming up", kind, url)
        run_bare(url, bodies[: args.parallel], args.parallel)

        rounds: list[dict[str, Any]] = []
        runs = ["ioa", "bare", "single"]
        for r in range(args.rounds):
            order = runs[r % 3 :] + runs[: r % 3]  # rotate, so no client always runs first or last
            row: dict[str, Any] = {"round": r, "order": order}
            for who in order:
                if who == "ioa":
                    tokens, seconds = run_ioa(teacher, requests)
                elif who == "bare":
                    tokens, seconds = run_bare(url, bodies, args.parallel)
                else:
                    tokens, seconds = run_bare(url, bodies[: args.single], 1)
                row[who] = {"tokens": tokens, "seconds": round(seconds, 3), "tok_per_s": round(tokens / seconds, 2)}
                log.info("round %d %-6s %5d tokens in %6.2f s = %6.1f tok/s", r, who, tokens, seconds, tokens / seconds)
            row["ratio"] = round(row["ioa"]["tok_per_s"] / row["bare"]["tok_per_s"], 3)
            rounds.append(row)
    load_after = os.getloadavg()

    def aggregate(who: str) -> float:
        return sum(r[who]["tokens"] for r in rounds) / sum(r[who]["seconds"] for r in rounds)

    ioa_tps, bare_tps, single_tps = aggregate("ioa"), aggregate("bare"), aggregate("single")
    result = {
        "server": kind,
        "model": args.model,
        "parallel_slots": args.parallel,
        "concurrency": args.parallel,
        "prompts_per_round": args.prompts,
        "max_tokens": args.max_tokens,
        "rounds": rounds,
        "ioa_tok_per_s": round(ioa_tps, 2),
        "bare_tok_per_s": round(bare_tps, 2),
        "ratio_ioa_over_bare": round(ioa_tps / bare_tps, 3),
        "ratio_median_of_rounds": round(statistics.median(r["ratio"] for r in rounds), 3),
        "target_ratio": 0.9,
        "single_stream_tok_per_s": round(single_tps, 2),
        "aggregate_over_single_stream": round(bare_tps / single_tps, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{kind}, {args.parallel} slots, {args.prompts} prompts × {args.max_tokens} tokens, {args.rounds} rounds\n"
        f"ioa  {ioa_tps:7.1f} tok/s\nbare {bare_tps:7.1f} tok/s\n"
        f"ratio ioa/bare {ioa_tps / bare_tps:.3f} (median of rounds {result['ratio_median_of_rounds']:.3f}; "
        f"target ≥ 0.9)\n"
        f"aggregate {bare_tps:.1f} tok/s vs single-stream {single_tps:.1f} tok/s "
        f"(×{bare_tps / single_tps:.2f})\nwrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

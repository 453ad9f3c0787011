"""Generation throughput: ioa's in-process llama.cpp backend vs llama-cpp-python called directly.

For the student and the teacher, in ONE run, three ways to answer the same prompts (temperature 0):
- direct:      `Llama.create_chat_completion`, one prompt at a time, same settings and max_tokens;
- ioa-seq:     `CachedModel(LlamaCppModel(n_parallel=1))` with a fresh temporary call cache (the sequential
               path, cache overhead included);
- ioa-batched: `CachedModel(LlamaCppModel(n_parallel=P))`, fresh cache: continuous batching, P in flight.
Every round runs all three methods on all the prompts, in an order rotated from round to round, so load
from other processes on the shared machine hits all alike. Per-round tokens/s and paired ratios are
summarised by their medians.

    .venv/bin/python benchmarks/generation.py [--teacher qwen2.5-coder-0.5b] [--n 16] [--max-tokens 128]

`--threads` defaults to every core, like ioa. On a machine shared with other jobs use `--threads 1`: a
llama.cpp thread spins at each of the hundreds of barriers per decode while its partner is descheduled, and
two threads on two busy cores measured 10-30x slower than one.

Prints a table, the ioa/direct ratio (target ≥ 0.95) and batched/sequential, and writes
benchmarks/results/generation.json (`--out` to change).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ioa.models.base import ChatRequest, Generation, SamplingParams
from ioa.models.cache import CachedModel, CallCache
from ioa.models.llamacpp import LlamaCppModel, chat_kwargs
from ioa.models.registry import embedded, installed_path

log = logging.getLogger("generation")
METHODS = ("direct", "ioa-seq", "ioa-batched")


def arithmetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    forms = [
        "Solve step by step: what is {a} + {b} * {c}?",
        "Solve step by step: what is {a} * {b} - {c}?",
        "Solve step by step: a shop has {a} boxes of {b} apples and sells {c} apples. How many are left?",
        "Solve step by step: what is ({a} + {b}) * {c}?",
    ]
    return [
        forms[i % len(forms)].format(a=rng.randint(10, 99), b=rng.randint(2, 19), c=rng.randint(2, 49))
        for i in range(n)
    ]


class Direct:
    """llama-cpp-python used by hand: one `create_chat_completion` per prompt."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int, n_batch: int) -> None:
        from llama_cpp import Llama

        self.llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=n_batch,
            verbose=False,
        )

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            # The same arguments ioa passes (temperature 0, top_p, seed, max_tokens), so the work is identical.
            reply = self.llama.create_chat_completion(**chat_kwargs(r))
            choice, usage = reply["choices"][0], reply["usage"]
            out.append(
                Generation(
                    choice["message"]["content"] or "",
                    usage["prompt_tokens"],
                    usage["completion_tokens"],
                    choice["finish_reason"] or "stop",
                )
            )
        return out


def bench_model(name: str, prompts: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    model = embedded(name)
    path = installed_path(model)
    if path is None:
        raise SystemExit(f"{name} is not installed: run `ioa models install {name}`")
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    requests = [ChatRequest.of([{"role": "user", "content": p}], params) for p in prompts]

    def ioa(n_parallel: int) -> LlamaCppModel:
        return LlamaCppModel(
            path,
            name=name,
            fingerprint=model.sha256,
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            n_batch=args.n_batch,
            n_parallel=n_parallel,
        )

    direct = Direct(path, args.n_ctx, args.threads, args.n_batch)
    backends = {"ioa-seq": ioa(1), "ioa-batched": ioa(args.parallel)}
    warm = [ChatRequest.of([{"role": "user", "content": f"Say {w}."}], SamplingParams(max_tokens=4)) for w in "ab"]
    direct.generate(warm)  # load weights, allocate contexts, fault the mmap in
    for backend in backends.values():
        backend.generate(warm)

    rounds: list[dict[str, dict[str, float]]] = []
    texts: dict[str, list[Generation]] = {m: [] for m in METHODS}
    for r in range(args.rounds):
        order = METHODS[r % 3 :] + METHODS[: r % 3]
        row: dict[str, dict[str, float]] = {}
        for method in order:
            runner: Any = direct
            if method in backends:  # a fresh call cache every round: every call is a miss, overhead included
                runner = CachedModel(backends[method], CallCache(tmp / f"{name}-{method}-{r}.sqlite"))
            t0 = time.perf_counter()
            out = runner.generate(requests)
            seconds = time.perf_counter() - t0
            if isinstance(runner, CachedModel):
                assert runner.hits == 0, "the temporary cache must not serve anything"
                runner.cache.close()
            tokens = sum(g.completion_tokens for g in out)
            row[method] = {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}
            texts[method].extend(out)
            log.info(
                "%s round %d %-11s %5d tokens %7.1f s %7.1f tok/s", name, r, method, tokens, seconds, tokens / seconds
            )
        rounds.append(row)

    def med(f: Callable[[dict[str, dict[str, float]]], float]) -> float:
        return statistics.median(f(row) for row in rounds)

    summary = {
        m: {
            "tok_s_median": med(lambda row, m=m: row[m]["tok_s"]),
            "tok_s_rounds": [row[m]["tok_s"] for row in rounds],
            "tokens": sum(row[m]["tokens"] for row in rounds),
            "seconds": sum(row[m]["seconds"] for row in rounds),
        }
        for m in METHODS
    }
    for m in METHODS:
        summary[m]["tok_s_overall"] = summary[m]["tokens"] / summary[m]["seconds"]
    ratios = {  # paired per round, then the median: robust to load drifting between rounds
        "ioa_seq_over_direct": med(lambda row: row["ioa-seq"]["tok_s"] / row["direct"]["tok_s"]),
        "ioa_batched_over_direct": med(lambda row: row["ioa-batched"]["tok_s"] / row["direct"]["tok_s"]),
        "batched_over_seq": med(lambda row: row["ioa-batched"]["tok_s"] / row["ioa-seq"]["tok_s"]),
    }

    def same(a: Generation, b: Generation) -> bool:
        return (a.text, a.completion_tokens, a.finish_reason) == (b.text, b.completion_tokens, b.finish_reason)

    matches = {
        f"{m}_vs_direct": sum(same(a, b) for a, b in zip(texts[m], texts["direct"], strict=True))
        for m in ("ioa-seq", "ioa-batched")
    }
    tokenize = direct.llama.tokenize  # the first token must always agree (prefilled alone, like direct)
    first_token_ok = sum(
        tokenize(a.text.encode(), add_bos=False, special=False)[:1]
        == tokenize(b.text.encode(), add_bos=False, special=False)[:1]
        for a, b in zip(texts["ioa-batched"], texts["direct"], strict=True)
    )
    for backend in backends.values():
        backend.close()
    return {
        "model": name,
        "prompts": len(requests),
        "rounds": len(rounds),
        "methods": summary,
        "ratios": ratios,
        "identical_replies": {
            **matches,
            "of": len(texts["direct"]),
            "batched_same_first_token_vs_direct": first_token_ok,
        },
        "per_round": rounds,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print(f"{'model':<22}{'method':<13}{'tok/s (median)':>15}{'tok/s (all)':>13}{'tokens':>8}{'seconds':>9}")
    for res in results:
        for m in METHODS:
            s = res["methods"][m]
            print(
                f"{res['model']:<22}{m:<13}{s['tok_s_median']:>15.1f}{s['tok_s_overall']:>13.1f}"
                f"{s['tokens']:>8}{s['seconds']:>9.1f}"
            )
        r, same = res["ratios"], res["identical_replies"]
        verdict = "ok" if r["ioa_seq_over_direct"] >= 0.95 else "BELOW 0.95"
        print(
            f"{'':<22}ioa-seq/direct {r['ioa_seq_over_direct']:.3f} ({verdict}), "
            f"ioa-batched/direct {r['ioa_batched_over_direct']:.2f}, batched/seq {r['batched_over_seq']:.2f}"
        )
        print(
            f"{'':<22}identical to direct: ioa-seq {same['ioa-seq_vs_direct']}/{same['of']}, "
            f"ioa-batched {same['ioa-batched_vs_direct']}/{same['of']} "
            f"(same first token {same['batched_same_first_token_vs_direct']}/{same['of']})"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="smollm2-135m")
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    parser.add_argument("--only", choices=("student", "teacher"), help="benchmark one of the two")
    parser.add_argument("--n", type=int, default=16, help="prompts per model, answered by every method each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=16, help="sequences in flight in ioa-batched")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generation.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    names = {"student": args.student, "teacher": args.teacher}
    roles = [args.only] if args.only else ["student", "teacher"]
    prompts = arithmetic_prompts(args.n)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="ioa-bench-") as tmp:
        for role in roles:
            res = bench_model(names[role], prompts, args, Path(tmp))
            res["role"] = role
            results.append(res)
    print_table(results)

    import llama_cpp

    report = {
        "benchmark": "generation",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": {
            "n": args.n,
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "parallel": args.parallel,
            "threads": args.threads,
            "n_ctx": args.n_ctx,
            "n_batch": args.n_batch,
            "temperature": 0.0,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

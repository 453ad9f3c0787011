"""Overhead of the sandbox: median ms per trivial program, sandboxed vs a plain subprocess.

Usage: python benchmarks/sandbox_overhead.py [--n 30] [--out benchmarks/results/sandbox_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ioa import sandbox

CODE = "print(sum(range(10)))"


def plain_ms() -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, check=True)
    elapsed = (time.perf_counter() - start) * 1000
    assert done.stdout == b"45\n"
    return elapsed


def sandbox_ms() -> float:
    start = time.perf_counter()
    result = sandbox.run_python(CODE)
    elapsed = (time.perf_counter() - start) * 1000
    assert result.status == "pass" and result.stdout == "45\n", result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="executions of each kind")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sandbox_overhead.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    details = sandbox.isolation_details()  # detection (and its probe) happens here, not in the timings
    plain_ms(), sandbox_ms()  # warm the page cache for both paths
    plain: list[float] = []
    boxed: list[float] = []
    for _ in range(args.n):  # interleaved, so load changes on the (shared) machine hit both equally
        plain.append(plain_ms())
        boxed.append(sandbox_ms())

    report = {
        "n": args.n,
        "program": CODE,
        "isolation": details["name"],
        "sandbox_interpreter": next(iter(details["interpreters"])),  # type: ignore[call-overload]
        "plain_interpreter": sys.executable,
        "plain_median_ms": round(statistics.median(plain), 2),
        "sandbox_median_ms": round(statistics.median(boxed), 2),
        "plain_p90_ms": round(statistics.quantiles(plain, n=10)[-1], 2),
        "sandbox_p90_ms": round(statistics.quantiles(boxed, n=10)[-1], 2),
        "ratio": round(statistics.median(boxed) / statistics.median(plain), 2),
        "extra_ms": round(statistics.median(boxed) - statistics.median(plain), 2),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.release()}",
    }
    print(
        f"plain subprocess: {report['plain_median_ms']:.1f} ms median | "
        f"sandbox ({report['isolation']}): {report['sandbox_median_ms']:.1f} ms median | "
        f"ratio {report['ratio']:.2f}x (+{report['extra_ms']:.1f} ms), n={args.n}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

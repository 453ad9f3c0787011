"""kill -9 in the middle of a 200-request teacher run, at three points: after restart nothing is paid twice.

What "the total number of requests that reached the server equals the number of distinct prompts" can
mean. A request that the server has answered but whose reply the client has not yet committed is lost
by a kill -9 and must be sent again after the restart; no OpenAI-compatible server offers idempotency
keys, so no client can make that window zero. What ioa guarantees is the rest: every reply is committed
to the cache the moment it arrives (not at the end of the batch), and a committed reply is never
requested again. The test therefore kills while the client has requests in flight but the upstream has
none in progress: the proxy closes a gate that holds new requests before they reach the upstream, waits
until every request that did reach it has been answered AND committed by the client, then the client is
killed (its held requests are discarded unanswered, never forwarded). Under that interpretation the
equality is exact, and it also proves per-completion commits: with commits at the end of the batch the
cache would be empty at each kill and every restart would pay again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from http_support import FaultProxy, cache_rows, crash_requests, echo_text, wait_until

HERE = Path(__file__).resolve().parent
KILL_POINTS = (30, 90, 150)  # upstream replies before each kill -9


def _spawn(url: str, cache: Path, out: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(HERE / "http_support.py"), "drive", url, "--cache", str(cache), "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill9_at_three_points_never_pays_twice(tmp_path: Path) -> None:
    requests = crash_requests()
    prompts = [r.messages[-1][1] for r in requests]
    distinct = len(set(prompts))
    assert (len(requests), distinct) == (200, 180)
    cache, out = tmp_path / "cache.sqlite", tmp_path / "replies.json"

    with FaultProxy(echo=True, echo_delay_s=0.01) as proxy:
        for point in KILL_POINTS:
            proc = _spawn(proxy.url, cache, out)
            try:
                wait_until(
                    lambda p=point, child=proc: proxy.upstream_done >= p or child.poll() is not None,
                    120,
                    f"{point} replies",
                )
                assert proc.poll() is None, f"the driver ended: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
                proxy.close_gate()
                wait_until(lambda: proxy.upstream_in_progress == 0 and proxy.held >= 1, 30, "the upstream to drain")
                # Every reply the upstream produced is committed by the client before we kill it.
                wait_until(lambda: cache_rows(cache) == proxy.upstream_done, 30, "the client to commit every reply")
                proc.kill()  # SIGKILL: no clean-up, no flush, nothing
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
                proxy.discard_held()  # the dead client's held requests never reach the upstream
            assert proc.returncode == -9
            assert not out.exists()
            assert cache_rows(cache) == proxy.upstream_done >= point

        final = _spawn(proxy.url, cache, out)
        try:
            assert final.wait(timeout=120) == 0, final.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        finally:
            if final.poll() is None:
                final.kill()
                final.wait(timeout=30)

        assert proxy.upstream_done == proxy.upstream_started == distinct  # each distinct prompt reached it once
        assert sum(proxy.delivered.values()) == distinct and set(proxy.delivered.values()) == {1}
    assert cache_rows(cache) == distinct
    texts = json.loads(out.read_text())["texts"]
    assert texts == [echo_text(p) for p in prompts]  # nothing lost, nothing duplicated, in order

"""Persistent call cache: a crash or a rerun never pays for the same model call twice.

Keyed by (model fingerprint, messages, sampling params). SQLite in WAL mode, so several
processes may share one cache file; a row is committed before the reply is used.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ioa.models.base import ChatModel, ChatRequest, Generation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    writes INTEGER NOT NULL DEFAULT 1
)
"""


def _request_payload(request: ChatRequest) -> dict[str, object]:
    payload: dict[str, object] = {"messages": request.messages, "params": request.params.as_dict()}
    if request.response_format is not None:  # only when set: keys of plain requests stay unchanged
        payload["response_format"] = request.response_format
    return payload


def request_key(fingerprint: str, request: ChatRequest) -> str:
    payload = json.dumps(
        {"model": fingerprint, **_request_payload(request)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class CallCache:
    """A key-value store of model replies."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
        if "writes" not in columns:  # a cache file from before the audit column: add it, keep every reply
            self._db.execute("ALTER TABLE calls ADD COLUMN writes INTEGER NOT NULL DEFAULT 1")

    def get_many(self, keys: Sequence[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT key, text, prompt_tokens, completion_tokens, finish_reason, seconds "
                    f"FROM calls WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, text, pt, ct, fr, sec in rows:
                    found[key] = Generation(text, pt, ct, fr, cached=True, seconds=sec)
        return found

    def put(self, key: str, model: str, request: ChatRequest, generation: Generation) -> None:
        row = (
            key,
            model,
            json.dumps(_request_payload(request)),
            generation.text,
            generation.prompt_tokens,
            generation.completion_tokens,
            generation.finish_reason,
            generation.seconds,
            time.time(),  # set here: unixepoch('subsec') needs SQLite >= 3.42 (Debian 12 ships 3.40 → NULL)
        )
        with self._lock:
            # `writes` counts how often a reply was paid for: above 1 means a call was repeated (an audit).
            self._db.execute(
                "INSERT INTO calls (key, model, request, text, prompt_tokens, completion_tokens,"
                " finish_reason, seconds, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET text = excluded.text, writes = writes + 1",
                row,
            )

    def repeated_calls(self) -> int:
        """How many stored replies were generated more than once (0 when no call was ever paid twice)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls WHERE writes > 1").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedModel:
    """Wraps a ChatModel so every call is looked up in, and written to, a CallCache.

    Each fresh reply is stored before the caller sees it. A backend that declares `supports_on_result`
    (the HTTP teacher) gets an `on_result(index, generation)` callback and each reply is committed the
    moment IT completes, so a crash mid-batch loses only the calls in flight; other backends' replies
    are stored as soon as their batch returns. Identical requests in one batch are generated once.
    """

    def __init__(self, model: ChatModel, cache: CallCache) -> None:
        self.model = model
        self.cache = cache
        self.name = model.name
        self.hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """Replies in request order: cached ones from the file, the rest from the model (each distinct once).

        A request repeated within the batch is sent once; its copies are marked `cached` (no model call paid
        for them) and count as hits, so `misses` is the number of calls the model actually answered.
        """
        keys = [request_key(self.fingerprint, r) for r in requests]
        found = self.cache.get_many(keys)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found:
                first.setdefault(k, i)
        unique = list(first.values())
        self.misses += len(unique)
        self.hits += len(requests) - len(unique)
        fresh: dict[str, Generation] = {}
        if unique:
            batch = [requests[i] for i in unique]

            def store(j: int, generation: Generation) -> None:
                i = unique[j]
                if keys[i] not in fresh:
                    self.cache.put(keys[i], self.name, requests[i], generation)
                    fresh[keys[i]] = generation

            if getattr(self.model, "supports_on_result", False):
                replies = self.model.generate(batch, on_result=store)  # type: ignore[call-arg]
            else:
                replies = self.model.generate(batch)
            if len(replies) != len(batch):
                raise RuntimeError(f"{self.name} answered {len(replies)} of {len(batch)} requests")
            for j, generation in enumerate(replies):  # replies on_result did not see (or all of them) are stored here
                store(j, generation)
        out: list[Generation] = []
        for i, k in enumerate(keys):
            if k in found:
                out.append(found[k])
            elif first[k] == i:
                out.append(fresh[k])
            else:
                out.append(replace(fresh[k], cached=True))
        return out

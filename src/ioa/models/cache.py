"""Persistent call cache: a crash or a rerun never pays for the same model call twice.

Keyed by (model fingerprint, messages, sampling params). SQLite in WAL mode, so several
processes may share one cache file; a row is committed before the reply is used.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
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
    created REAL NOT NULL DEFAULT (unixepoch('subsec'))
)
"""


def request_key(fingerprint: str, request: ChatRequest) -> str:
    payload = json.dumps(
        {"model": fingerprint, "messages": request.messages, "params": request.params.as_dict()},
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
            json.dumps({"messages": request.messages, "params": request.params.as_dict()}),
            generation.text,
            generation.prompt_tokens,
            generation.completion_tokens,
            generation.finish_reason,
            generation.seconds,
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, model, request, text, prompt_tokens, completion_tokens,"
                " finish_reason, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedModel:
    """Wraps a ChatModel so every call is looked up in, and written to, a CallCache.

    Each fresh reply is stored as soon as its batch returns, before the caller sees it.
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
        keys = [request_key(self.fingerprint, r) for r in requests]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = self.model.generate([requests[i] for i in todo])
            for i, generation in zip(todo, fresh, strict=True):
                self.cache.put(keys[i], self.name, requests[i], generation)
                found[keys[i]] = generation
        return [found[k] for k in keys]

"""The run directory (DESIGN §10): atomic writes, a record of finished steps, and an event log.

Nothing in it is ever half-written: every file is written to a temporary name and renamed into place.
A step is done when `state.json` says so with the hash of the inputs it was computed from; a rerun
skips it, and a changed input reruns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ioa.errors import IoaError


def _umask() -> int:
    """The process umask (read once: setting it back and forth is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; give the mode open() would give
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(path, exc) from exc


def _write_error(path: Path, exc: OSError) -> IoaError:
    fix = "free disk space or fix permissions, then rerun the same command"
    return IoaError(f"could not write {path}: {exc.strerror or exc}", fix)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "model_dump"):  # pydantic configs
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def inputs_hash(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=_jsonable, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class RunDir:
    """runs/NAME/: resolved config, state of finished steps, call cache and events."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    @property
    def cache_path(self) -> Path:
        return self.path / "cache.sqlite"

    # -- finished steps ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        path = self.path / "state.json"
        return read_json(path) if path.exists() else {"steps": {}}

    def is_done(self, step: str, digest: str) -> bool:
        return self._state()["steps"].get(step, {}).get("inputs") == digest

    def mark_done(self, step: str, digest: str, **info: Any) -> None:
        state = self._state()
        state["steps"][step] = {"inputs": digest, "finished": time.time(), **info}
        write_json(self.path / "state.json", state)

    # -- events ------------------------------------------------------------------------------------
    def event(self, kind: str, **data: Any) -> None:
        """Append one event line; a crash can at worst leave a torn last line, which readers skip.

        A torn line left by a crash is terminated first, so it cannot swallow the line appended after it.
        """
        line = json.dumps({"time": time.time(), "event": kind, **data}, default=_jsonable, ensure_ascii=False)
        path = self.path / "events.jsonl"
        try:
            with open(path, "ab+") as f:  # append mode: every write goes to the end
                end = f.seek(0, os.SEEK_END)
                torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
                f.write((b"\n" if torn else b"") + line.encode("utf-8") + b"\n")
        except OSError as exc:
            raise _write_error(path, exc) from exc

    def events(self) -> Iterator[dict[str, Any]]:
        path = self.path / "events.jsonl"
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)

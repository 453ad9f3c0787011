"""In-process GGUF generation through llama-cpp-python, with the model's own chat template."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ioa.errors import ModelIntegrityError, ModelNotFoundError
from ioa.models.base import ChatRequest, Generation

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Fail early, with a fix, on a missing or non-GGUF file (llama.cpp's own error is opaque)."""
    if not path.exists():
        raise ModelNotFoundError(f"model file {path} does not exist", "check the path, or use an embedded name")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC or path.stat().st_size < 1024:
        raise ModelIntegrityError(
            f"{path} is not a valid GGUF file (bad header or truncated)",
            "re-download or re-convert the model",
        )


class LlamaCppModel:
    """A GGUF model loaded once and kept in memory; greedy decoding at temperature 0."""

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        fingerprint: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
    ) -> None:
        check_gguf(path)
        self.path = Path(path)
        self.name = name or self.path.stem
        self._fingerprint = fingerprint
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.n_batch = n_batch
        self._llama = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from ioa.models.registry import sha256_file

            self._fingerprint = sha256_file(self.path)
        return self._fingerprint

    @property
    def llama(self):
        if self._llama is None:
            from llama_cpp import Llama

            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    self._llama = Llama(
                        model_path=str(self.path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_batch=self.n_batch,
                        verbose=False,
                    )
            except (ValueError, RuntimeError) as exc:
                raise ModelIntegrityError(
                    f"llama.cpp could not load {self.path.name}: {exc}", "the file is corrupt; re-install it"
                ) from exc
        return self._llama

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        return [self._generate_one(r) for r in requests]

    def _generate_one(self, request: ChatRequest) -> Generation:
        p = request.params
        start = time.perf_counter()
        out = self.llama.create_chat_completion(
            messages=request.message_dicts,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            seed=p.seed,
            stop=list(p.stop) or None,
        )
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return Generation(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
            seconds=time.perf_counter() - start,
        )

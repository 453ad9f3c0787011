"""In-process GGUF generation through llama-cpp-python, with the model's own chat template."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ioa.errors import ModelIntegrityError, ModelNotFoundError
from ioa.models.base import ChatRequest, Generation
from ioa.models.llamacpp_batch import BatchEngine, PreparedRequest, UnsupportedRequest, prepare_request

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
    """A GGUF model loaded once and kept in memory; greedy decoding at temperature 0.

    Several requests in one `generate` call are decoded together (continuous batching, up to `n_parallel`
    in flight, see `llamacpp_batch`); a single request, `n_parallel=1`, or a request the batch engine does
    not support goes through `Llama.create_chat_completion` one at a time. Both paths format and sample alike.
    16 in flight: on 2 CPU cores 8-token steps were no cheaper per token than single ones, 16-token steps
    were 1.3-1.5x cheaper (llama.cpp's matmul kernels), and 16 KV slots of a few hundred tokens are small.
    """

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        fingerprint: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_parallel: int = 16,
    ) -> None:
        check_gguf(path)
        self.path = Path(path)
        self.name = name or self.path.stem
        self._fingerprint = fingerprint
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.n_batch = n_batch
        self.n_parallel = max(1, n_parallel)
        self._llama: Any = None
        self._engine: BatchEngine | None = None
        self._lock = threading.Lock()  # a llama.cpp context is not thread-safe

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from ioa.models.registry import sha256_file

            self._fingerprint = sha256_file(self.path)
        return self._fingerprint

    @property
    def llama(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    self._llama = Llama(
                        model_path=str(self.path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        # llama-cpp-python would use every core for multi-token decodes (prompts, and every
                        # step of batched generation); `n_threads` is the one budget for both.
                        n_threads_batch=self.n_threads,
                        n_batch=self.n_batch,
                        verbose=False,
                    )
            except (ValueError, RuntimeError) as exc:
                raise ModelIntegrityError(
                    f"llama.cpp could not load {self.path.name}: {exc}", "the file is corrupt; re-install it"
                ) from exc
        return self._llama

    @property
    def engine(self) -> BatchEngine:
        if self._engine is None:
            self._engine = BatchEngine(self.llama, n_parallel=self.n_parallel, n_batch=self.n_batch)
        return self._engine

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        if not requests:
            return []
        with self._lock:
            if self.n_parallel > 1 and len(requests) > 1:
                return self._generate_batched(requests)
            return [self._generate_one(r) for r in requests]

    def generate_sequential(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """One `create_chat_completion` per request (the reference path; benchmarks compare against it)."""
        with self._lock:
            return [self._generate_one(r) for r in requests]

    def close(self) -> None:
        """Free the batch context (the model itself is freed with the `Llama`)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _generate_batched(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        prepared: list[tuple[int, PreparedRequest]] = []
        out: list[Generation | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                prepared.append((i, prepare_request(self.llama, chat_kwargs(request))))
            except UnsupportedRequest as exc:
                log.debug("request %d served sequentially: %s", i, exc)
                out[i] = self._generate_one(request)
        for (i, _), generation in zip(prepared, self.engine.run([p for _, p in prepared]), strict=True):
            out[i] = generation
        return [g for g in out if g is not None]

    def _generate_one(self, request: ChatRequest) -> Generation:
        start = time.perf_counter()
        out = self.llama.create_chat_completion(**chat_kwargs(request))
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return Generation(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
            seconds=time.perf_counter() - start,
        )


def chat_kwargs(request: ChatRequest) -> dict[str, Any]:
    """The `create_chat_completion` arguments for a request: shared by both paths so they cannot drift."""
    p = request.params
    return {
        "messages": request.message_dicts,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_tokens,
        "seed": p.seed,
        "stop": list(p.stop) or None,
    }

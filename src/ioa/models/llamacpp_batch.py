"""Continuous batching for in-process GGUF generation, through llama-cpp-python's low-level API.

`Llama.create_chat_completion` decodes one request at a time, so on CPU each step multiplies the weights
by a single activation vector and the whole run is bound by memory bandwidth. Here up to `n_parallel`
sequences share one `llama_context` (one KV stream per sequence, `n_seq_max = n_parallel`) and every
`llama_decode` advances all of them by one token: the weights are read once per step for all sequences.
When a sequence finishes, the next pending request starts in its slot (continuous batching); its prompt is
prefilled in a decode of its own (see `_fill_batch`), then it joins the others' steps. A slot keeps the KV of
its last request, and a new prompt reuses the prefix it shares with it (system prompt, template head), as
`Llama.generate` does with the previous prompt.

Fidelity to the high-level path is the point of this module, so:
- prompts come from `Llama.create_chat_completion` itself, run against a proxy that records what it would
  have passed to `create_completion` (the model's own chat template, BOS handling, the template's stop
  string, the sampling defaults): the prompt tokens are identical by construction;
- each sequence has its own llama.cpp sampler chain built like `Llama._init_sampler` (penalties, then
  greedy at temperature 0, or top-k/typical/top-p/min-p/temperature/seeded dist above it), so temperature
  > 0 is batched too, with per-request seeds;
- end of generation, stop strings, the UTF-8 hold-back, `max_tokens` and the usage counts follow
  `Llama._create_completion` line by line.
Requests that use what this engine does not implement (grammars, logprobs, mirostat, …) raise
`UnsupportedRequest` from `prepare_request`, and the caller serves them sequentially.
"""

from __future__ import annotations

import ctypes
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ioa.models.base import Generation

log = logging.getLogger(__name__)

KV_GRANULE = 256  # per-sequence KV sizes are rounded up to this, so small changes do not rebuild the context
UTF8_SLACK = 8  # `_create_completion` may run past max_tokens while it holds back a split UTF-8 character


class UnsupportedRequest(Exception):
    """The request needs a feature only the high-level (sequential) path implements."""


class _Captured(Exception):  # control flow: carries the captured create_completion arguments
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.kwargs = kwargs


class _CaptureLlama:
    """Stands in for a `Llama` inside `create_chat_completion`: everything is delegated except
    `create_completion`, whose arguments are captured instead of run."""

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, **kwargs: Any) -> Any:
        raise _Captured(kwargs)


@dataclass(frozen=True)
class SamplerSpec:
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    typical_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int


@dataclass(frozen=True)
class PreparedRequest:
    """Exactly what `Llama._create_completion` would work with for one chat request."""

    prompt_tokens: list[int]
    max_tokens: int
    stop: list[bytes]
    sampler: SamplerSpec

    @property
    def kv_needed(self) -> int:
        return len(self.prompt_tokens) + self.max_tokens + UTF8_SLACK


def prepare_request(llama: Any, chat_kwargs: dict[str, Any]) -> PreparedRequest:
    """Format a request through the high-level chat path and return its prompt tokens and settings.

    `chat_kwargs` are the keyword arguments the sequential path passes to `create_chat_completion`.
    """
    from llama_cpp import Llama

    try:
        # Unbound call with the proxy as `self`: the same handler lookup, template, tokenisation and defaults.
        Llama.create_chat_completion(_CaptureLlama(llama), **chat_kwargs)  # type: ignore[arg-type]
    except _Captured as captured:
        kw = captured.kwargs
    else:  # a handler that never calls create_completion (multimodal, function calling, …)
        raise UnsupportedRequest("the chat handler does not go through create_completion")
    unsupported = [
        name
        for name, bad in (
            ("stream", bool(kw.get("stream"))),
            ("logprobs", kw.get("logprobs") is not None),
            ("logits_processor", kw.get("logits_processor") is not None),
            ("grammar", kw.get("grammar") is not None),
            ("logit_bias", kw.get("logit_bias") is not None),
            ("mirostat", kw.get("mirostat_mode", 0) != 0),
            ("suffix", kw.get("suffix") is not None),
        )
        if bad
    ]
    prompt = kw.get("prompt")
    if unsupported or not isinstance(prompt, list):
        raise UnsupportedRequest(f"not batched: {', '.join(unsupported) or 'text prompt'}")
    # The Jinja2 formatter's stopping criterion ("last evaluated token is EOS") cannot fire before the EOG check
    # in `_create_completion` has already ended the sequence, so it is not reproduced.

    n_ctx = llama.n_ctx()
    if len(prompt) >= n_ctx:
        raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of {n_ctx}")
    max_tokens = kw.get("max_tokens")
    if max_tokens is None or max_tokens <= 0:
        max_tokens = n_ctx - len(prompt)
    max_tokens = max_tokens if max_tokens + len(prompt) < n_ctx else n_ctx - len(prompt)

    stop = kw.get("stop") or []
    stop = stop if isinstance(stop, list) else [stop]
    seed = kw.get("seed")
    if seed is None:  # as `_create_completion` does, without mutating the shared Llama
        seed = random.Random(llama._seed).randint(0, 2**32)
    spec = SamplerSpec(
        temperature=float(kw.get("temperature", 0.8)),
        top_k=int(kw.get("top_k", 40)),
        top_p=float(kw.get("top_p", 0.95)),
        min_p=float(kw.get("min_p", 0.05)),
        typical_p=float(kw.get("typical_p", 1.0)),
        repeat_penalty=float(kw.get("repeat_penalty", 1.0)),
        frequency_penalty=float(kw.get("frequency_penalty", 0.0)),
        presence_penalty=float(kw.get("presence_penalty", 0.0)),
        seed=int(seed),
    )
    return PreparedRequest(list(prompt), int(max_tokens), [s.encode("utf-8") for s in stop], spec)


def _make_sampler(llama: Any, spec: SamplerSpec) -> Any:
    """A sampler chain built exactly like `Llama._init_sampler` (without its custom/grammar stages)."""
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    sampler.add_penalties(
        n_vocab=llama.n_vocab(),
        penalty_last_n=llama.last_n_tokens_size,
        penalty_repeat=spec.repeat_penalty,
        penalty_freq=spec.frequency_penalty,
        penalty_present=spec.presence_penalty,
    )
    if spec.temperature < 0.0:
        sampler.add_dist(spec.seed)
    elif spec.temperature == 0.0:
        sampler.add_greedy()
    else:
        sampler.add_top_k(spec.top_k)
        sampler.add_typical(spec.typical_p, 1)
        sampler.add_top_p(spec.top_p, 1)
        sampler.add_min_p(spec.min_p, 1)
        sampler.add_temp(spec.temperature)
        sampler.add_dist(spec.seed)
    return sampler


@dataclass
class _Sequence:
    """One request in flight in a KV slot."""

    index: int
    request: PreparedRequest
    sampler: Any
    started: float
    n_prefilled: int = 0  # prompt tokens whose KV is in the slot (a reused prefix counts)
    n_fed: int = 0  # tokens whose KV is in the slot: the prompt part, then the fed completion tokens
    completion: list[int] = field(default_factory=list)
    raw: bytes = b""
    multibyte_fix: int = 0
    out_index: int = -1  # row of this sequence's logits in the last decoded batch, -1 if none
    result: Generation | None = None

    @property
    def prefilled(self) -> bool:
        return self.n_prefilled >= len(self.request.prompt_tokens)

    @property
    def position(self) -> int:
        """Position of the next token to feed (the last sampled one)."""
        return len(self.request.prompt_tokens) + len(self.completion) - 1


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BatchEngine:
    """Decodes many prepared requests together in a second `llama_context` on the `Llama`'s model."""

    def __init__(self, llama: Any, n_parallel: int = 8, n_batch: int = 512, kv_unified: bool = False) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llama = llama
        self.n_batch = max(1, n_batch)
        self.n_parallel = max(1, min(n_parallel, self.n_batch))  # every slot needs room for its next token
        self.kv_unified = kv_unified
        self._ctx: Any = None
        self._held: list[list[int]] = []  # per slot: the tokens whose KV it still holds, for prefix reuse
        self._n_seq = 0
        self._n_ctx_seq = 0
        self._vocab = llama._model.vocab
        self._bos = llama.token_bos()
        self._piece_buf = ctypes.create_string_buffer(64)

    # -- context ---------------------------------------------------------------------------------------

    def _ensure_context(self, n_seq: int, n_ctx_seq: int) -> None:
        """(Re)build the context when it has too few slots or too little KV per slot; memory grows with
        n_seq × n_ctx_seq, so both are sized from the requests at hand, never from the model's maximum."""
        if self._ctx is not None and self._n_seq >= n_seq and self._n_ctx_seq >= n_ctx_seq:
            return
        from llama_cpp._internals import LlamaContext

        n_seq = max(n_seq, self._n_seq)
        n_ctx_seq = max(n_ctx_seq, self._n_ctx_seq)
        self.close()
        src = self.llama.context_params
        params = type(src).from_buffer_copy(src)  # same threads, attention, rope, KV types as the Llama
        params.n_seq_max = n_seq
        params.n_ctx = n_seq * n_ctx_seq
        params.n_batch = self.n_batch
        params.n_ubatch = min(self.n_batch, src.n_ubatch)
        # One KV stream per sequence: each sequence's cells are contiguous from position 0, as in the
        # single-sequence context, so attention sums in the same order as the sequential path.
        params.kv_unified = self.kv_unified
        params.embeddings = False
        try:
            self._ctx = LlamaContext(model=self.llama._model, params=params, verbose=False)
        except ValueError as exc:
            raise RuntimeError(f"llama.cpp could not create a batch context ({n_seq} × {n_ctx_seq} tokens)") from exc
        self._n_seq = n_seq
        self._n_ctx_seq = int(self._lib.llama_n_ctx_seq(self._ctx.ctx))
        self._held = [[] for _ in range(n_seq)]
        log.debug("batch context: %d sequences × %d tokens", n_seq, self._n_ctx_seq)

    def reset(self) -> None:
        """Forget the cached prefixes: the next prompts are prefilled from scratch (like `Llama.reset`)."""
        if self._ctx is not None:
            self._lib.llama_memory_clear(self._ctx.memory, True)
            self._held = [[] for _ in range(self._n_seq)]

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
            self._n_seq = self._n_ctx_seq = 0

    # -- generation ------------------------------------------------------------------------------------

    def run(self, requests: Sequence[PreparedRequest]) -> list[Generation]:
        if not requests:
            return []
        n_seq = min(self.n_parallel, len(requests))
        need = max(r.kv_needed for r in requests)
        self._ensure_context(n_seq, -(-need // KV_GRANULE) * KV_GRANULE)
        lib, ctx = self._lib, self._ctx.ctx
        memory = self._ctx.memory

        batch = lib.llama_batch_init(self.n_batch, 0, 1)
        pending = deque(range(len(requests)))
        slots: list[_Sequence | None] = [None] * n_seq
        results: list[Generation | None] = [None] * len(requests)
        steps = 0
        t0 = time.perf_counter()
        try:
            while pending or any(seq is not None for seq in slots):
                while pending and None in slots:  # continuous batching: a free slot takes the next request
                    i = pending.popleft()
                    s = self._admit(slots, requests[i].prompt_tokens)
                    sampler = _make_sampler(self.llama, requests[i].sampler)
                    slots[s] = seq = _Sequence(i, requests[i], sampler, time.perf_counter())
                    seq.n_prefilled = seq.n_fed = self._reuse_prefix(s, requests[i].prompt_tokens)
                n = self._fill_batch(batch, slots)
                rc = lib.llama_decode(ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc} (batch of {n} tokens)")
                steps += 1
                for s, seq in enumerate(slots):
                    if seq is None or seq.out_index < 0:
                        continue
                    token = lib.llama_sampler_sample(seq.sampler.sampler, ctx, seq.out_index)
                    if self._advance(seq, int(token)):
                        results[seq.index] = seq.result
                        seq.sampler.close()
                        self._held[s] = (seq.request.prompt_tokens + seq.completion)[: seq.n_fed]
                        slots[s] = None
        finally:
            lib.llama_batch_free(batch)
            for s, seq in enumerate(slots):
                if seq is not None:  # interrupted: what the slot holds is unknown, forget it
                    seq.sampler.close()
                    lib.llama_memory_seq_rm(memory, s, -1, -1)
                    self._held[s] = []
        done = [r for r in results if r is not None]
        elapsed = time.perf_counter() - t0
        n_out = sum(g.completion_tokens for g in done)
        log.info(
            "batched %d requests (%d slots): %d tokens in %.1f s (%.1f tok/s, %d decode calls)",
            len(requests),
            n_seq,
            n_out,
            elapsed,
            n_out / max(elapsed, 1e-9),
            steps,
        )
        return done

    def _admit(self, slots: Sequence[_Sequence | None], prompt: Sequence[int]) -> int:
        """The free slot whose cached tokens share the longest prefix with the prompt."""
        free = [s for s, seq in enumerate(slots) if seq is None]
        return max(free, key=lambda s: _common_prefix(self._held[s], prompt))

    def _reuse_prefix(self, s: int, prompt: Sequence[int]) -> int:
        """Keep the slot's KV for the prefix it shares with the prompt, as `Llama.generate` does with its
        previous prompt (chat prompts share the system prompt and template head); returns its length.
        At least the last prompt token is decoded again, for its logits."""
        memory = self._ctx.memory
        keep = min(_common_prefix(self._held[s], prompt), len(prompt) - 1)
        if keep <= 0 or not self._lib.llama_memory_seq_rm(memory, s, keep, -1):
            self._lib.llama_memory_seq_rm(memory, s, -1, -1)  # removing a whole sequence never fails
            keep = 0
        self._held[s] = list(prompt[:keep])
        return keep

    def _fill_batch(self, batch: Any, slots: Sequence[_Sequence | None]) -> int:
        """The next decode: a prompt chunk of ONE sequence if any is still prefilling, else one token for
        every generating sequence.

        Prompts are prefilled alone, in n_batch chunks, exactly as `Llama.eval` does: the CPU matmul kernels
        block rows differently when several prompts share a batch, and the rounding differences that follow
        were enough to flip a near-tie first token of the 1.5B teacher ("Certainly!" vs "To solve", 4/24).
        Prefilled alone from the same cached prefix, the first token is the sequential path's; only later steps,
        decoded many rows at a time, can drift. (Which prefix is cached changes the rounding too, in
        llama-cpp-python itself: the last prompt token decoded alone or with others. Measured on the teacher,
        greedy, 48 tokens: its own replies changed 2/16 with prefix history, the first token 0/16.)
        The cost is small: prefill compute is the same, generation waits one short decode.
        """
        n = 0
        for seq in slots:
            if seq is not None:
                seq.out_index = -1
        for s, seq in enumerate(slots):
            if seq is not None and not seq.prefilled:
                prompt = seq.request.prompt_tokens
                take = min(len(prompt) - seq.n_prefilled, self.n_batch)
                for k in range(seq.n_prefilled, seq.n_prefilled + take):
                    n = self._add(batch, n, prompt[k], k, s, k == len(prompt) - 1)
                seq.n_prefilled += take
                seq.n_fed += take
                if seq.prefilled:
                    seq.out_index = n - 1
                batch.n_tokens = n
                return n
        for s, seq in enumerate(slots):
            if seq is not None:
                n = self._add(batch, n, seq.completion[-1], seq.position, s, True)
                seq.out_index = n - 1
                seq.n_fed += 1
        batch.n_tokens = n
        return n

    @staticmethod
    def _add(batch: Any, n: int, token: int, pos: int, seq_id: int, logits: bool) -> int:
        batch.token[n] = token
        batch.pos[n] = pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq_id
        batch.logits[n] = logits
        return n + 1

    def _piece(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        if n < 0:  # buffer too small (cannot happen for real vocabularies): retry with the size asked for
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def _text(self, seq: _Sequence) -> bytes:
        # `LlamaModel.detokenize` drops the leading space of a text that starts with BOS.
        if seq.completion and seq.completion[0] == self._bos and seq.raw[:1] == b" ":
            return seq.raw[1:]
        return seq.raw

    def _advance(self, seq: _Sequence, token: int) -> bool:
        """One iteration of `Llama._create_completion`'s loop; True when the sequence is finished."""
        req = seq.request
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return self._finish(seq, self._text(seq), "stop")
        seq.completion.append(token)
        seq.raw += self._piece(token)
        all_text = self._text(seq)
        for k, char in enumerate(all_text[-3:]):  # hold back a split UTF-8 character, as upstream does
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    seq.multibyte_fix = num - k
        if seq.position >= self._n_ctx_seq:  # KV slot full (only reachable through the hold-back)
            return self._finish(seq, all_text, "length")
        if seq.multibyte_fix > 0:
            seq.multibyte_fix -= 1
            return False
        hits = [s for s in req.stop if s in all_text]
        if hits:
            return self._finish(seq, all_text[: all_text.index(hits[0])], "stop")
        if len(seq.completion) >= req.max_tokens:
            return self._finish(seq, all_text, "length")
        return False

    @staticmethod
    def _finish(seq: _Sequence, text: bytes, reason: str) -> bool:
        # `seconds` is the request's wall time in the batch (admission to finish); the compute is shared.
        seq.result = Generation(
            text=text.decode("utf-8", errors="ignore"),
            prompt_tokens=len(seq.request.prompt_tokens),
            completion_tokens=len(seq.completion),
            finish_reason=reason,
            seconds=time.perf_counter() - seq.started,
        )
        return True

"""Transformers backend: batched chat generation from a Hugging Face model directory (trained students).

Requests with the same sampling parameters are sorted by prompt length and decoded together in left-padded
batches: the prompts' common prefix (chat-template system prompt, few-shot examples) is prefilled once and
shared, and rows leave the batch as soon as they finish. Measured on the 2-core machine (SmolLM2-135M,
32 arithmetic prompts, ≤ 48 new tokens, 1 thread): 5.3× the tokens/s of one prompt at a time, same text.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ioa.errors import ModelIntegrityError, ModelNotFoundError
from ioa.models.base import ChatRequest, Generation, SamplingParams

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Files besides the weights that change what the model writes: architecture, tokenizer, chat template, EOS.
BEHAVIOUR_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)
FINGERPRINT_FILE = ".ioa_fingerprint.json"
MIN_SHARED_PREFIX = 8  # below this, prefilling a common prefix separately saves less than it costs


def fingerprint_dir(path: Path) -> str:
    """sha256 over a model directory's weights and behaviour files (names and contents).

    The digest is cached in a small file beside the weights, keyed by each file's size and mtime, so a
    540 MB student is hashed once, not at every cache lookup.
    """
    path = Path(path)
    files = sorted(
        p for p in path.iterdir()
        if p.is_file() and (p.name.endswith(WEIGHT_SUFFIXES) or p.name in BEHAVIOUR_FILES)
    )
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in files):
        raise ModelNotFoundError(f"{path} holds no model weights (*.safetensors)", "point at a saved model")
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache = path / FINGERPRINT_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        if cached["stamp"] == stamp:
            return str(cached["sha256"])
    digest = hashlib.sha256()
    for p in files:
        from ioa.models.registry import sha256_file

        digest.update(p.name.encode() + b"\0" + sha256_file(p).encode() + b"\n")
    sha = digest.hexdigest()
    try:  # best effort: a read-only model directory just means hashing again next time
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"sha256": sha, "stamp": stamp}))
        os.replace(tmp, cache)
    except OSError:
        log.debug("could not cache the fingerprint of %s", path)
    return sha


def check_hf_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {path} does not exist", "check the path")
    if not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"{path} has no config.json, so it is not a Hugging Face model", "point at a saved model directory"
        )


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers/datasets progress bars (restored afterwards) and stray tqdm output on stderr."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class HFModel:
    """A causal LM in Hugging Face format, answering chat requests with its own chat template.

    Greedy at temperature 0; otherwise temperature + top-p sampling with a generator per request seeded
    from `params.seed`, so a reply does not depend on which requests shared its batch (up to float
    rounding, which padding and batch size can shift in rare near-ties).
    """

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        batch_size: int = 32,
        device: str | None = None,
        dtype: str = "float32",
    ) -> None:
        self.path = Path(path).expanduser()
        check_hf_dir(self.path)
        self.name = name or self.path.name
        self.batch_size = max(1, batch_size)
        self.device = device or default_device()
        self.dtype = dtype
        self._fingerprint: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache_kw: str | None = None

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, path: Path, name: str | None = None, **kw: Any) -> HFModel:
        """Wrap a model already in memory (e.g. just trained and saved to `path`) without reloading it."""
        wrapped = cls(path, name=name, device=str(model.device), **kw)
        wrapped._model, wrapped._tokenizer = model.eval(), _ready_tokenizer(tokenizer)
        return wrapped

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_dir(self.path)
        return self._fingerprint

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            start = time.perf_counter()
            try:
                with quiet_transformers():
                    tokenizer = AutoTokenizer.from_pretrained(self.path)
                    model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, self.dtype))
            except (OSError, ValueError) as exc:
                raise ModelIntegrityError(
                    f"transformers could not load {self.path}: {exc}", "re-save or re-train the model"
                ) from exc
            self._model = model.to(self.device).eval()
            self._tokenizer = _ready_tokenizer(tokenizer)
            log.info("loaded %s on %s in %.1f s", self.path.name, self.device, time.perf_counter() - start)
        return self._model, self._tokenizer

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """Token ids of the request rendered with the model's chat template, ready for the answer."""
        _, tokenizer = self._load()
        if not tokenizer.chat_template:
            raise ModelIntegrityError(
                f"{self.path} has no chat template", "save the tokenizer with its chat_template"
            )
        text = tokenizer.apply_chat_template(request.message_dicts, add_generation_prompt=True, tokenize=False)
        # The template already writes any BOS; adding special tokens again would double it.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        if not requests:
            return []
        prompts = [self.prompt_ids(r) for r in requests]
        groups: dict[SamplingParams, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.params, []).append(i)
        results: list[Generation | None] = [None] * len(requests)
        for params, indices in groups.items():
            # Similar lengths together: less left padding to compute through.
            indices.sort(key=lambda i: len(prompts[i]))
            for k in range(0, len(indices), self.batch_size):
                batch = indices[k : k + self.batch_size]
                for i, gen in zip(batch, self._generate_batch([prompts[i] for i in batch], params), strict=True):
                    results[i] = gen
        return [g for g in results if g is not None]

    def _generate_batch(self, prompts: list[list[int]], p: SamplingParams) -> list[Generation]:
        """Decode one left-padded batch, dropping rows from it as they finish.

        A hand-written loop rather than `model.generate`: generate keeps computing finished rows until the
        longest answer ends, so one rambling answer makes the whole batch pay for its length.
        """
        import torch

        model, tokenizer = self._load()
        start = time.perf_counter()
        device = model.device
        width = max(len(ids) for ids in prompts)
        pad = tokenizer.pad_token_id
        eos = _eos_ids(model, tokenizer)
        limit = getattr(model.config, "max_position_embeddings", None) or (width + p.max_tokens)
        max_new = max(1, min(p.max_tokens, limit - width))
        window = max((len(s) for s in p.stop), default=0) + 1  # a new stop string ends in the last `window` tokens
        # One generator per row, all seeded alike: a sampled answer does not depend on its batch neighbours.
        gens = [torch.Generator(device=device).manual_seed(p.seed) for _ in prompts] if p.temperature > 0 else []

        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        active = list(range(len(prompts)))  # batch row → request index
        new: list[list[int]] = [[] for _ in prompts]
        finish = ["length"] * len(prompts)
        with torch.inference_mode():
            shared = self._prefill_shared_prefix(model, prompts, cache)
            suffixes = [ids[shared:] for ids in prompts]
            tail = max(len(ids) for ids in suffixes)
            input_ids = torch.tensor([[pad] * (tail - len(ids)) + ids for ids in suffixes], device=device)
            # [shared prefix][padding][own suffix]: the mask hides the padding, positions skip over it
            mask = torch.tensor(
                [[1] * shared + [0] * (tail - len(ids)) + [1] * len(ids) for ids in suffixes], device=device
            )
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
            logits = self._forward(model, input_ids, mask, positions, cache)
            while True:
                picked = _pick(logits, p, [gens[i] for i in active] if gens else []).tolist()
                keep = []
                for row, (i, tok) in enumerate(zip(active, picked, strict=True)):
                    if tok in eos:
                        finish[i] = "stop"
                        continue
                    new[i].append(tok)
                    tail = tokenizer.decode(new[i][-window:], skip_special_tokens=True) if p.stop else ""
                    if p.stop and any(s in tail for s in p.stop):
                        finish[i] = "stop"
                    elif len(new[i]) < max_new:
                        keep.append(row)
                if not keep:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    mask, positions = mask[index], positions[index]
                    active = [active[row] for row in keep]
                step = torch.tensor([[new[i][-1]] for i in active], device=device)
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                positions = positions[:, -1:] + 1
                logits = self._forward(model, step, mask, positions, cache)
        seconds = (time.perf_counter() - start) / len(prompts)  # the batch's time, shared out
        out = []
        for i, ids in enumerate(prompts):
            text = tokenizer.decode(new[i], skip_special_tokens=True)
            cut = min((text.find(s) for s in p.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
            out.append(Generation(text, len(ids), len(new[i]), finish_reason=finish[i], seconds=seconds))
        return out

    def _prefill_shared_prefix(self, model: Any, prompts: list[list[int]], cache: Any) -> int:
        """Run the prompts' common prefix once and copy its KV cache to every row; returns its length.

        Chat prompts share a lot (the template's system prompt is 30+ tokens for SmolLM2, few-shot examples
        more), and prefill is most of the compute when answers are short.
        """
        import torch

        layers = getattr(cache, "layers", None)
        if len(prompts) < 2 or not layers or not all(hasattr(x, "batch_repeat_interleave") for x in layers):
            return 0
        first, shared = prompts[0], min(len(ids) for ids in prompts) - 1  # every row keeps ≥ 1 own token
        for ids in prompts[1:]:
            shared = next((j for j in range(shared) if ids[j] != first[j]), shared)
        if shared < MIN_SHARED_PREFIX:
            return 0
        device = model.device
        ids = torch.tensor([first[:shared]], device=device)
        self._forward(model, ids, torch.ones_like(ids), torch.arange(shared, device=device)[None], cache)
        for layer in layers:
            layer.batch_repeat_interleave(len(prompts))
        return shared

    def _forward(self, model: Any, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        """Last-position logits (float32) of one forward step; the KV cache is updated in place."""
        if self._cache_kw is None:  # transformers 5.24 renamed past_key_values to cache
            params = inspect.signature(model.forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,  # the vocabulary projection of every prompt position would be wasted work
            **{self._cache_kw: cache},
        )
        return out.logits[:, -1, :].float()


def _pick(logits: Any, p: SamplingParams, gens: list[Any]) -> Any:
    """Next token per row: argmax at temperature 0, else temperature + nucleus (top-p) sampling."""
    import torch

    if p.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > p.top_p  # keeps the token that crosses top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.cat([torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(gens)])


def _ready_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token_id is None:  # padding only fills masked positions; EOS is as good as any
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends a turn: the generation config may list several (e.g. <|eot_id|> and EOS)."""
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids

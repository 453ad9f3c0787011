"""The one interface every model backend implements: chat requests in, text plus usage out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Temperature 0 means greedy, which makes probes reproducible."""

    temperature: float = 0.0
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
        }


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    # Structured output, OpenAI style: {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}
    # or {"type": "json_object"}. Backends without support ignore it (the caller validates the reply anyway).
    # Part of the cache key only when set, so keys of plain requests stay as they were.
    response_format: Mapping[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def of(
        cls,
        messages: Sequence[Message],
        params: SamplingParams | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> ChatRequest:
        return cls(tuple((m["role"], m["content"]) for m in messages), params or SamplingParams(), response_format)

    @property
    def message_dicts(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class Generation:
    """A model's reply with its token usage; `cached` is True when served from the call cache."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    cached: bool = False
    seconds: float = 0.0


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers chat requests: llama.cpp in-process, an HTTP endpoint, transformers."""

    name: str

    @property
    def fingerprint(self) -> str:
        """Identifies the exact weights (e.g. the GGUF sha256); part of every cache key."""
        ...

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """Answer each request, in order."""
        ...

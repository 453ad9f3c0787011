"""The persistent call cache: keys, hits and misses, order, persistence across processes, in-batch duplicates,
and per-reply durability for backends that report each completion (`on_result`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ioa.models.base import ChatModel, ChatRequest, Generation, SamplingParams
from ioa.models.cache import CachedModel, CallCache, request_key


class ScriptedModel:
    """A ChatModel that answers `reply(prompt)` and records every request it was actually sent."""

    def __init__(self, name: str = "fake", fingerprint: str = "fp-1") -> None:
        self.name = name
        self._fingerprint = fingerprint
        self.batches: list[list[str]] = []

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def calls(self) -> int:
        return sum(len(b) for b in self.batches)

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        prompts = [r.messages[-1][1] for r in requests]
        self.batches.append(prompts)
        return [Generation(f"reply to {r.messages[-1][1]} @T{r.params.temperature}", 5, 3) for r in requests]


class StreamingModel(ScriptedModel):
    """Like the HTTP teacher: reports each reply through `on_result`, in completion (not request) order."""

    supports_on_result = True

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.fail_after = fail_after

    def generate(  # type: ignore[override]
        self, requests: Sequence[ChatRequest], on_result: Callable[[int, Generation], None] | None = None
    ) -> list[Generation]:
        replies = super().generate(requests)
        for done, i in enumerate(reversed(range(len(replies)))):
            if self.fail_after is not None and done == self.fail_after:
                raise ConnectionError("server went away")
            if on_result is not None:
                on_result(i, replies[i])
        return replies


def req(prompt: str, **params: object) -> ChatRequest:
    return ChatRequest.of([{"role": "user", "content": prompt}], SamplingParams(**params))  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path) -> CallCache:
    c = CallCache(tmp_path / "cache.sqlite")
    yield c
    c.close()


def test_fake_satisfies_the_protocol() -> None:
    assert isinstance(ScriptedModel(), ChatModel)


def test_request_key_depends_on_fingerprint_messages_and_every_param() -> None:
    base = request_key("fp", req("hi"))
    assert base == request_key("fp", req("hi"))  # stable
    assert len(base) == 64
    variants = [
        request_key("fp2", req("hi")),
        request_key("fp", req("hi ")),
        request_key("fp", ChatRequest.of([{"role": "system", "content": "hi"}])),
        request_key("fp", req("hi", temperature=0.7)),
        request_key("fp", req("hi", max_tokens=257)),
        request_key("fp", req("hi", top_p=0.9)),
        request_key("fp", req("hi", seed=1)),
        request_key("fp", req("hi", stop=("\n",))),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_second_identical_request_is_a_hit(cache: CallCache) -> None:
    model = ScriptedModel()
    cached = CachedModel(model, cache)
    first = cached.generate([req("2+2")])
    second = cached.generate([req("2+2")])
    assert model.calls == 1
    assert first[0].cached is False
    assert second[0].cached is True
    assert (second[0].text, second[0].prompt_tokens, second[0].completion_tokens) == (
        first[0].text,
        first[0].prompt_tokens,
        first[0].completion_tokens,
    )
    assert (cached.hits, cached.misses) == (1, 1)


@pytest.mark.parametrize(
    "other",
    [
        lambda: (ScriptedModel(fingerprint="fp-2"), req("2+2")),
        lambda: (ScriptedModel(), req("2+3")),
        lambda: (ScriptedModel(), req("2+2", temperature=0.7)),
        lambda: (ScriptedModel(), req("2+2", max_tokens=9)),
        lambda: (ScriptedModel(), req("2+2", seed=5)),
    ],
    ids=["fingerprint", "messages", "temperature", "max_tokens", "seed"],
)
def test_a_difference_in_key_is_a_miss(
    cache: CallCache, other: Callable[[], tuple[ScriptedModel, ChatRequest]]
) -> None:
    CachedModel(ScriptedModel(), cache).generate([req("2+2")])
    model, request = other()
    out = CachedModel(model, cache).generate([request])
    assert model.calls == 1
    assert out[0].cached is False
    assert len(cache) == 2


def test_mixed_hits_and_misses_come_back_in_request_order(cache: CallCache) -> None:
    model = ScriptedModel()
    cached = CachedModel(model, cache)
    cached.generate([req("b"), req("d")])
    prompts = ["a", "b", "c", "d", "e"]
    out = cached.generate([req(p) for p in prompts])
    assert [g.text for g in out] == [f"reply to {p} @T0.0" for p in prompts]
    assert [g.cached for g in out] == [False, True, False, True, False]
    assert model.batches[-1] == ["a", "c", "e"]  # only the misses reach the model
    assert (cached.hits, cached.misses) == (2, 5)


def test_all_hits_do_not_call_the_model(cache: CallCache) -> None:
    model = ScriptedModel()
    cached = CachedModel(model, cache)
    cached.generate([req("x"), req("y")])
    cached.generate([req("y"), req("x")])
    assert model.batches == [["x", "y"]]


def test_empty_batch(cache: CallCache) -> None:
    model = ScriptedModel()
    assert CachedModel(model, cache).generate([]) == []
    assert model.batches == []


def test_replies_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "r" / "cache.sqlite"
    first = CallCache(path)
    CachedModel(ScriptedModel(), first).generate([req("q1"), req("q2")])
    first.close()

    again = CallCache(path)  # a new process opening the same file
    model = ScriptedModel()
    out = CachedModel(model, again).generate([req("q2"), req("q1"), req("q3")])
    again.close()
    assert model.batches == [["q3"]]
    assert [g.cached for g in out] == [True, True, False]
    assert out[0].text == "reply to q2 @T0.0"


def test_row_is_committed_before_the_caller_gets_it(tmp_path: Path) -> None:
    """Another connection (another process) sees the row as soon as generate returns, without close()."""
    path = tmp_path / "cache.sqlite"
    cache = CallCache(path)
    CachedModel(ScriptedModel(), cache).generate([req("durable")])
    other = sqlite3.connect(path)
    rows = other.execute("SELECT model, text, created FROM calls").fetchall()
    other.close()
    cache.close()
    assert [r[:2] for r in rows] == [("fake", "reply to durable @T0.0")]
    assert rows[0][2] > 1.7e9  # a real timestamp (SQLite < 3.42 has no unixepoch('subsec'): it was NULL)


def test_duplicates_in_one_batch_are_sent_once_and_fanned_out(cache: CallCache) -> None:
    model = ScriptedModel()
    cached = CachedModel(model, cache)
    out = cached.generate([req("a"), req("b"), req("a"), req("a"), req("b", temperature=0.5)])
    assert model.batches == [["a", "b", "b"]]  # b at another temperature is another request
    assert [g.text for g in out] == [
        "reply to a @T0.0",
        "reply to b @T0.0",
        "reply to a @T0.0",
        "reply to a @T0.0",
        "reply to b @T0.5",
    ]
    # The copies were not paid for: they are flagged like cache hits, and misses count real model calls.
    assert [g.cached for g in out] == [False, False, True, True, False]
    assert (cached.hits, cached.misses) == (2, 3)
    assert len(cache) == 3


def test_on_result_commits_each_reply_as_it_completes(tmp_path: Path) -> None:
    """A crash mid-batch keeps the replies that completed before it; the rerun pays only for the rest."""
    path = tmp_path / "cache.sqlite"
    cache = CallCache(path)
    crashing = StreamingModel(fail_after=2)
    with pytest.raises(ConnectionError):
        CachedModel(crashing, cache).generate([req(p) for p in "abcd"])
    assert len(cache) == 2  # d and c completed (reverse order) before the crash
    cache.close()

    cache = CallCache(path)
    model = StreamingModel()
    out = CachedModel(model, cache).generate([req(p) for p in "abcd"])
    cache.close()
    assert model.batches == [["a", "b"]]
    assert [g.text for g in out] == [f"reply to {p} @T0.0" for p in "abcd"]
    assert [g.cached for g in out] == [False, False, True, True]


def test_on_result_with_duplicates(cache: CallCache) -> None:
    model = StreamingModel()
    out = CachedModel(model, cache).generate([req("a"), req("a"), req("b")])
    assert model.batches == [["a", "b"]]
    assert [g.text for g in out] == ["reply to a @T0.0", "reply to a @T0.0", "reply to b @T0.0"]
    assert len(cache) == 2


class ForgetfulStreamingModel(ScriptedModel):
    """Claims on_result support but never calls it: the returned replies must still be cached."""

    supports_on_result = True

    def generate(  # type: ignore[override]
        self, requests: Sequence[ChatRequest], on_result: Callable[[int, Generation], None] | None = None
    ) -> list[Generation]:
        return super().generate(requests)


def test_replies_on_result_missed_are_stored_from_the_return_value(cache: CallCache) -> None:
    out = CachedModel(ForgetfulStreamingModel(), cache).generate([req("a"), req("b")])
    assert [g.text for g in out] == ["reply to a @T0.0", "reply to b @T0.0"]
    assert len(cache) == 2


class ShortModel(ScriptedModel):
    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        return super().generate(requests)[:-1]


def test_a_backend_that_drops_a_reply_is_an_error_not_a_misaligned_cache(cache: CallCache) -> None:
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        CachedModel(ShortModel(), cache).generate([req("a"), req("b")])
    assert len(cache) == 0


def test_large_lookup_crosses_the_500_key_chunks(cache: CallCache) -> None:
    model = ScriptedModel()
    cached = CachedModel(model, cache)
    prompts = [f"q{i}" for i in range(1203)]
    cached.generate([req(p) for p in prompts[::2]])
    out = cached.generate([req(p) for p in prompts])
    assert model.calls == 1203
    assert sum(g.cached for g in out) == 602
    assert [g.text for g in out][1200] == "reply to q1200 @T0.0"

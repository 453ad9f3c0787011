"""In-process llama.cpp backend: batched generation against the sequential high-level path, stops,
max_tokens, usage counts, and refusal of missing or corrupt GGUF files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ioa.errors import ModelIntegrityError, ModelNotFoundError
from ioa.models.base import ChatRequest, Generation, SamplingParams
from ioa.models.llamacpp import LlamaCppModel, chat_kwargs
from ioa.models.llamacpp_batch import prepare_request
from ioa.models.registry import embedded, installed_path

PROMPTS = [
    f"Solve step by step: what is {a} + {b} * {c}?"
    for a, b, c in [(12, 3, 4), (7, 8, 9), (25, 2, 6), (31, 4, 5), (9, 9, 9), (14, 6, 3), (50, 7, 2), (18, 5, 8)]
]
REF_TOKENS = 48


def request(text: str, **params: object) -> ChatRequest:
    return ChatRequest.of([{"role": "user", "content": text}], SamplingParams(**params))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def student() -> Iterator[LlamaCppModel]:
    path = installed_path(embedded("smollm2-135m"))
    if path is None:
        pytest.skip("smollm2-135m is not installed (ioa models install smollm2-135m)")
    # One thread: on a shared 2-core machine a second llama.cpp thread spins at every barrier while the other
    # is descheduled (measured 15-30x slower under load). Both paths under test use the same setting.
    model = LlamaCppModel(path, n_ctx=2048, n_threads=1, n_parallel=8)
    yield model
    model.close()


@pytest.fixture(scope="module")
def references(student: LlamaCppModel) -> list[Generation]:
    """The sequential high-level path's greedy replies to PROMPTS (computed once: the CPU is the bottleneck)."""
    return student.generate_sequential([request(p, max_tokens=REF_TOKENS) for p in PROMPTS])


def same(a: Generation, b: Generation) -> bool:
    return (a.text, a.prompt_tokens, a.completion_tokens, a.finish_reason) == (
        b.text,
        b.prompt_tokens,
        b.completion_tokens,
        b.finish_reason,
    )


@pytest.mark.models
def test_batched_matches_sequential_greedy(student: LlamaCppModel, references: list[Generation]) -> None:
    sequential = references
    student.engine.reset()  # no cached prefixes: every prompt prefilled whole, whatever ran before
    batched = student.generate([request(p, max_tokens=REF_TOKENS) for p in PROMPTS])
    # Decoding 8 rows at a time takes other CPU matmul kernels than decoding 1, so a near-tie between two
    # tokens can flip later in a text (measured: 7/8 identical at 96 tokens, the 8th diverging at its 30th
    # token). Both are valid greedy decodes. The prompt tokens and the first token (each prompt is prefilled
    # alone, as in the sequential path) must agree: a difference there is a template/BOS bug.
    matches = sum(same(s, b) for s, b in zip(sequential, batched, strict=True))
    assert matches >= 7, [(s.text, b.text) for s, b in zip(sequential, batched, strict=True) if not same(s, b)]
    tokenize = student.llama.tokenize
    for s, b in zip(sequential, batched, strict=True):
        assert b.prompt_tokens == s.prompt_tokens
        assert (
            tokenize(b.text.encode(), add_bos=False, special=False)[:1]
            == tokenize(s.text.encode(), add_bos=False, special=False)[:1]
        )


@pytest.mark.models
def test_single_sequence_through_the_engine_is_exact(student: LlamaCppModel) -> None:
    # One sequence in the batch context uses the same kernels as the high-level path: any difference here is a
    # template, BOS, sampling or stop-handling bug, not numerics. Both start without a cached prefix: re-using
    # one changes which tokens are decoded one row at a time, and with it the rounding (the high-level path
    # itself answers a repeated seeded request differently the second time).
    for temperature in (0.0, 0.9):
        req = request(PROMPTS[1], max_tokens=24, temperature=temperature, seed=7)
        student.llama.reset()
        [reference] = student.generate_sequential([req])
        student.engine.reset()
        [solo] = student.engine.run([prepare_request(student.llama, chat_kwargs(req))])
        assert same(solo, reference), (solo, reference)


@pytest.mark.models
def test_prefix_of_the_previous_prompt_is_reused(student: LlamaCppModel) -> None:
    engine = student.engine
    engine.reset()
    first = prepare_request(student.llama, chat_kwargs(request(PROMPTS[2], max_tokens=4)))
    engine.run([first, first])
    assert engine._held[0][: len(first.prompt_tokens)] == first.prompt_tokens  # the slot kept its tokens
    second = prepare_request(student.llama, chat_kwargs(request(PROMPTS[3], max_tokens=4)))
    [out] = engine.run([second])
    assert out.completion_tokens == 4 and out.prompt_tokens == len(second.prompt_tokens)


@pytest.mark.models
def test_prompt_tokens_come_from_the_models_own_template(student: LlamaCppModel) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llama = student.llama
    formatter = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=llama._model.token_get_text(llama.token_eos()),
        bos_token=llama._model.token_get_text(llama.token_bos()),
    )
    req = request(PROMPTS[0], max_tokens=8)
    text = formatter(messages=req.message_dicts).prompt
    expected = llama.tokenize(text.encode(), add_bos=False, special=True)
    assert prepare_request(llama, chat_kwargs(req)).prompt_tokens == expected
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.models
def test_stop_strings_are_honoured(student: LlamaCppModel, references: list[Generation]) -> None:
    outputs = student.generate([request(p, max_tokens=REF_TOKENS, stop=("=",)) for p in PROMPTS[:4]])
    assert any(g.finish_reason == "stop" and g.completion_tokens < REF_TOKENS for g in outputs)
    for ref, out in zip(references, outputs, strict=False):
        assert "=" not in out.text
        if "=" in ref.text:  # cut just before the first "=" of the unstopped reply
            assert out.finish_reason == "stop"
            assert out.text == ref.text[: ref.text.index("=")]


@pytest.mark.models
def test_max_tokens_gives_finish_reason_length(student: LlamaCppModel) -> None:
    outputs = student.generate([request(p, max_tokens=n) for p, n in zip(PROMPTS[:3], (1, 5, 9), strict=True)])
    assert [g.completion_tokens for g in outputs] == [1, 5, 9]
    assert all(g.finish_reason == "length" for g in outputs)


@pytest.mark.models
def test_usage_counts_equal_tokenizer_counts(student: LlamaCppModel) -> None:
    llama = student.llama
    requests = [request(p, max_tokens=24) for p in PROMPTS[:3]] + [request("Say hi.", max_tokens=200)]
    outputs = student.generate(requests)
    assert outputs[-1].finish_reason == "stop"  # ended by the model's own end-of-turn token
    for req, out in zip(requests, outputs, strict=True):
        prepared = prepare_request(llama, chat_kwargs(req))
        assert out.prompt_tokens == len(prepared.prompt_tokens)
        # Greedy output is the tokenizer's own segmentation of the text in practice, so re-tokenizing counts it.
        assert out.completion_tokens == len(llama.tokenize(out.text.encode(), add_bos=False, special=False))


@pytest.mark.models
def test_continuous_batching_with_fewer_slots_than_requests(
    student: LlamaCppModel, references: list[Generation]
) -> None:
    narrow = LlamaCppModel(student.path, n_ctx=2048, n_threads=1, n_parallel=2)
    narrow._llama = student.llama  # share the loaded weights; the narrow model gets its own batch context
    lengths = (3, 20, 7, 12, 5)
    try:
        outputs = narrow.generate([request(p, max_tokens=n) for p, n in zip(PROMPTS[:5], lengths, strict=True)])
    finally:
        narrow.close()
    assert [g.prompt_tokens for g in outputs] == [g.prompt_tokens for g in references[:5]]  # answers stay in order
    assert [g.completion_tokens for g in outputs] == list(lengths)
    # A greedy reply cut at n tokens is the first n tokens of the longer reply (numerics aside, see above).
    assert sum(ref.text.startswith(out.text) for ref, out in zip(references, outputs, strict=False)) >= 4


@pytest.mark.models
def test_seeded_sampling_is_per_sequence(student: LlamaCppModel) -> None:
    fresh = LlamaCppModel(student.path, n_ctx=2048, n_threads=1, n_parallel=3)
    fresh._llama = student.llama  # shared weights, a batch context with no cached prefixes
    try:
        outputs = fresh.generate([request(PROMPTS[0], max_tokens=24, temperature=1.0, seed=s) for s in (1, 1, 2)])
    finally:
        fresh.close()
    assert outputs[0].text == outputs[1].text  # same seed, same prefill, same sequence of draws
    assert all(g.completion_tokens > 0 for g in outputs)


def test_empty_request_list(tmp_path: Path) -> None:
    fake = tmp_path / "never-loaded.gguf"
    fake.write_bytes(b"GGUF" + bytes(2048))
    model = LlamaCppModel(fake)
    assert model.generate([]) == []  # nothing to do: the file is not even loaded


def test_missing_gguf_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        LlamaCppModel(tmp_path / "absent.gguf")


def test_truncated_gguf_is_refused(tmp_path: Path) -> None:
    stub = tmp_path / "stub.gguf"
    stub.write_bytes(b"GGUF\x03\x00")  # a header cut short
    with pytest.raises(ModelIntegrityError):
        LlamaCppModel(stub)


def test_corrupt_gguf_with_valid_magic_is_refused_at_load(tmp_path: Path) -> None:
    source = installed_path(embedded("smollm2-135m"))
    broken = tmp_path / "broken.gguf"
    if source is not None:
        with open(source, "rb") as f:
            broken.write_bytes(f.read(1 << 20))  # the first MiB of a real model: header fine, tensors missing
    else:
        broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 4096)
    model = LlamaCppModel(broken)
    with pytest.raises(ModelIntegrityError):
        model.generate([request("hi", max_tokens=2)])

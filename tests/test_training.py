"""Training (DESIGN §5): example conversion, completion-only masking, full and LoRA fine-tuning of the real
student through TRL, merged Hugging Face output, and the all-or-nothing output directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ioa.config import RunConfig, TrainingConfig
from ioa.errors import ConfigError, DataError
from ioa.models.registry import embedded, installed_path
from ioa.training import (
    RESULT_FILE,
    TrainProgress,
    choose_method,
    sft_config,
    to_prompt_completion,
    train,
)

PAIRS = [(17, 25), (12, 13), (40, 2), (9, 9), (31, 44), (8, 15), (23, 19), (50, 50)]
EXAMPLES = [
    {"messages": [{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant", "content": str(a + b)}]}
    for a, b in PAIRS
]
# Two steps (epochs=2, one batch of 8 each), no warm-up: step 2 sees the same batch after one update.
TINY = {"epochs": 2, "batch_size": 8, "max_seq_len": 128, "warmup_ratio": 0.0, "lr_full": 1e-4, "lr_lora": 1e-3}


# ------------------------------------------------------------------------------------------ no model


def test_examples_become_conversational_prompt_completion_pairs() -> None:
    rows = to_prompt_completion([
        EXAMPLES[0],
        {"prompt": "Say hi", "completion": "hi", "lineage": {"stage": 1}},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
         "completion": [{"role": "assistant", "content": "4"}]},
    ])
    assert rows[0] == {
        "prompt": [{"role": "user", "content": "What is 17 + 25?"}],
        "completion": [{"role": "assistant", "content": "42"}],
    }
    assert rows[1] == {"prompt": [{"role": "user", "content": "Say hi"}],
                       "completion": [{"role": "assistant", "content": "hi"}]}
    assert rows[2]["prompt"][0]["role"] == "system"


@pytest.mark.parametrize(
    ("examples", "match"),
    [
        ([], "no training examples"),
        ([{"text": "x"}], "neither"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "end with an assistant turn"),
        ([{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}], "bad message"),
        ([{"prompt": "q", "completion": "  "}], "empty answer"),
    ],
)
def test_bad_examples_are_refused_with_the_fix(examples: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(DataError, match=match):
        to_prompt_completion(examples)


def test_config_defaults_follow_design() -> None:
    cfg = RunConfig().training
    assert (cfg.method, cfg.lr_full, cfg.lr_lora, cfg.batch_size, cfg.warmup_ratio) == ("auto", 5e-5, 2e-4, 8, 0.03)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32, 0.05)
    assert cfg.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.epochs <= 3 and not cfg.gradient_checkpointing
    assert choose_method(cfg, 135_000_000) == "full"
    assert choose_method(cfg, 1_500_000_000) == "lora"
    assert choose_method(TrainingConfig(method="lora"), 135_000_000) == "lora"
    with pytest.raises(ValidationError):
        TrainingConfig(epochs=4)
    with pytest.raises(ValidationError):
        TrainingConfig(lora_target_modules=[])


def test_sft_config_overrides_trl_defaults(tmp_path: Path) -> None:
    import torch

    args = sft_config(TrainingConfig(), tmp_path, "full")
    assert args.learning_rate == 5e-5 and args.lr_scheduler_type == "cosine" and args.optim == "adamw_torch"
    assert args.completion_only_loss is True and args.max_length == 1024 and not args.packing
    assert args.bf16 == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())  # TRL: bf16 on
    assert not args.gradient_checkpointing  # TRL's default is on
    assert getattr(args, "train_sampling_strategy", None) == "group_by_length" or args.group_by_length
    assert args.report_to in ([], "none", ["none"]) and args.disable_tqdm
    assert sft_config(TrainingConfig(), tmp_path, "lora").learning_rate == 2e-4


def test_warmup_never_spends_the_only_step_at_learning_rate_zero(tmp_path: Path) -> None:
    # 3% of 1 step rounds down to no warm-up (rounding up made a 1-step training a no-op); 3% of 100 is 3.
    assert sft_config(TrainingConfig(), tmp_path, "full", total_steps=1).warmup_steps == 0
    assert sft_config(TrainingConfig(), tmp_path, "full", total_steps=100).warmup_steps == 3


def test_existing_output_is_reused_only_for_the_same_inputs(tmp_path: Path, monkeypatch: Any) -> None:
    import ioa.training as training

    def no_model(spec: Any) -> Any:
        raise AssertionError("must not load the student")

    monkeypatch.setattr(training, "load_student", no_model)
    out = tmp_path / "student"
    out.mkdir()
    with pytest.raises(ConfigError, match="not a finished training output"):
        train("smollm2-135m", EXAMPLES, out, TrainingConfig())
    (out / RESULT_FILE).write_text(json.dumps({"inputs_sha256": "something else"}))
    with pytest.raises(ConfigError, match="other inputs"):
        train("smollm2-135m", EXAMPLES, out, TrainingConfig())


def test_a_failed_run_leaves_no_output_directory(tmp_path: Path, monkeypatch: Any) -> None:
    import ioa.training as training

    def crash(spec: Any) -> Any:
        raise RuntimeError("killed")

    monkeypatch.setattr(training, "load_student", crash)
    out = tmp_path / "student"
    (tmp_path / "student.tmp-0123456789ab").mkdir()  # left by an earlier killed run
    with pytest.raises(RuntimeError):
        train("smollm2-135m", EXAMPLES, out, TrainingConfig())
    assert not out.exists()
    assert not (tmp_path / "student.tmp-0123456789ab").exists()  # stale half-written output is cleared


# --------------------------------------------------------------------------------------- real student


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # The test machine's 2 cores are shared; under contention torch's 2-thread kernels ran ~5× slower than
    # 1 thread (measured), and these tests check behaviour, not speed.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(one_thread: None) -> tuple[Any, Any]:
    if installed_path(embedded("smollm2-135m")) is None:
        pytest.skip("smollm2-135m is not installed (ioa models install smollm2-135m)")
    from ioa.training import load_student

    return load_student("smollm2-135m")


@pytest.mark.models
def test_loss_is_on_the_answer_only(base: tuple[Any, Any], tmp_path: Path) -> None:
    from ioa.training import make_trainer

    model, tokenizer = base
    examples = [EXAMPLES[0], {"prompt": "Say hi", "completion": "hi there"}]
    trainer = make_trainer(model, tokenizer, examples, TrainingConfig(method="full", max_seq_len=128), tmp_path)
    rows = list(trainer.train_dataset)
    for row, answer in zip(rows, ["42", "hi there"], strict=True):
        ids, labels = row["input_ids"], row["labels"]
        first = next(i for i, label in enumerate(labels) if label != -100)
        assert all(label == -100 for label in labels[:first])  # the whole prompt is masked…
        assert labels[first:] == ids[first:]  # …and everything after it is learned
        # The prompt is the student's own chat template, ending where generation starts.
        prompt = tokenizer.apply_chat_template(examples[0]["messages"][:1] if answer == "42" else
                                               [{"role": "user", "content": "Say hi"}],
                                               add_generation_prompt=True, tokenize=False)
        assert tokenizer.decode(ids[:first]) == prompt
        # The answer ends with the end-of-turn token, so the student learns to stop.
        assert tokenizer.decode(ids[first:]).strip() == f"{answer}{tokenizer.eos_token}"
    batch = trainer.data_collator(rows)
    short = min(range(2), key=lambda r: len(rows[r]["input_ids"]))
    assert (batch["labels"][short, len(rows[short]["input_ids"]):] == -100).all()  # padding is not learned
    assert trainer._get_train_sampler().__class__.__name__ == "LengthGroupedSampler"


@pytest.mark.models
def test_full_fine_tuning_learns_and_saves_a_loadable_model(base: tuple[Any, Any], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen: list[TrainProgress] = []
    out = tmp_path / "full"
    result = train("smollm2-135m", EXAMPLES, out, TrainingConfig(method="full", **TINY), progress=seen.append)
    assert result.method == "full" and result.steps == 2 and not result.reused
    assert [p.step for p in seen] == [1, 2] and seen[-1].total_steps == 2
    assert result.losses[-1] < result.losses[0], result.losses
    assert result.tokens > result.completion_tokens > 0 and result.tokens_per_s > 0

    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", RESULT_FILE} <= names
    assert not list(tmp_path.glob("full.tmp-*"))  # the temporary directory became `out`
    record = json.loads((out / RESULT_FILE).read_text())
    assert record["config"]["method"] == "full" and len(record["metrics"]["log"]) == 2
    assert record["metrics"]["final_loss"] == result.final_loss

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # plain transformers
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == base[1].chat_template
    assert not hasattr(reloaded.config, "quantization_config")
    moved = _changed(base[0], reloaded)
    assert moved > 0.5, moved  # full fine-tuning touched most tensors

    again = train("smollm2-135m", EXAMPLES, out, TrainingConfig(method="full", **TINY))
    assert again.reused and again.losses == result.losses  # finished: nothing retrained


@pytest.mark.models
def test_lora_is_merged_into_a_plain_model(base: tuple[Any, Any], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    result = train("smollm2-135m", EXAMPLES, out, TrainingConfig(method="lora", **TINY))
    assert result.method == "lora" and result.losses[-1] < result.losses[0], result.losses
    assert not list(out.glob("adapter*"))  # merged: no adapter files needed
    record = json.loads((out / RESULT_FILE).read_text())
    assert record["trainable_params"] < record["params"] / 50  # only the adapters were trained

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    params = dict(merged.named_parameters())
    assert not any("lora" in name for name in params)
    base_params = dict(base[0].named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(params[q], base_params[q])  # the adapters are inside the weights now
    mlp = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(params[mlp], base_params[mlp])  # and nothing outside q/k/v/o moved


def _changed(a: Any, b: Any) -> float:
    import torch

    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return sum(not torch.equal(pa[n], pb[n]) for n in pa) / len(pa)

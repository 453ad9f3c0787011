"""Fine-tune the student through TRL's SFTTrainer (DESIGN §5) and save it merged, in Hugging Face format.

- Loss on the answer only: every example becomes a conversational prompt-completion pair, which TRL
  tokenizes with the student's own chat template and masks (labels -100) up to the answer.
- Length-bucketed batches (`group_by_length` sampling): on CPU, padding tokens cost as much as real ones.
- Full fine-tuning below 1B parameters, LoRA from 1B up (`TrainingConfig.method`); LoRA is merged before saving.
- Atomic output: training happens in `OUT.tmp-<hash>` and is renamed to OUT when everything is written, so
  OUT is either complete (weights, tokenizer, chat template, generation config, ioa_train.json) or absent.
  Calling `train` again with the same inputs returns the finished result without training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ioa.config import TrainingConfig
from ioa.errors import ConfigError, DataError, ModelNotFoundError
from ioa.models.hf import check_hf_dir, fingerprint_dir, quiet_transformers

log = logging.getLogger(__name__)

RESULT_FILE = "ioa_train.json"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TrainProgress:
    """One logged optimisation step, as passed to the `progress` callback."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    seconds: float


@dataclass
class TrainResult:
    """What a finished training left in `out_dir` (also stored there as ioa_train.json)."""

    out_dir: Path
    method: str
    examples: int
    steps: int
    losses: list[float]
    final_loss: float
    tokens: int  # non-padding tokens through the model, all epochs
    completion_tokens: int  # of which the answer tokens that carry the loss
    seconds: float  # training time (without loading and saving)
    tokens_per_s: float
    reused: bool = False  # True when out_dir was already finished with the same inputs
    step_log: list[dict[str, float]] = field(default_factory=list)  # one row per logged step

    @classmethod
    def from_dir(cls, out_dir: Path) -> TrainResult:
        record = json.loads((Path(out_dir) / RESULT_FILE).read_text())
        m = record["metrics"]
        return cls(
            out_dir=Path(out_dir),
            method=record["method"],
            examples=record["examples"],
            steps=m["steps"],
            losses=[row["loss"] for row in m["log"]],
            final_loss=m["final_loss"],
            tokens=m["tokens"],
            completion_tokens=m["completion_tokens"],
            seconds=m["seconds"],
            tokens_per_s=m["tokens_per_s"],
            reused=True,
            step_log=m["log"],
        )


# --------------------------------------------------------------------------------------------- loading


def student_source(spec: str | Path) -> tuple[Path, str | None]:
    """(directory, GGUF file name or None) for an embedded name, a .gguf path or a Hugging Face directory."""
    from ioa.models.registry import EMBEDDED, embedded

    text = str(spec)
    if text in EMBEDDED:
        from ioa.models.resolve import resolve_gguf

        gguf, _ = resolve_gguf(text)
        return gguf.parent, gguf.name
    path = Path(text).expanduser()
    if path.is_dir():
        check_hf_dir(path)
        return path, None
    if path.suffix == ".gguf" or path.is_file():
        from ioa.models.llamacpp import check_gguf

        check_gguf(path)
        return path.parent, path.name
    if "/" not in text:
        embedded(text)  # raises "unknown model name" with the list of names
    raise ModelNotFoundError(
        f"student {text!r} is not an embedded name, a .gguf file or a Hugging Face directory",
        "check the path, or use an embedded name (`ioa models`)",
    )


def student_fingerprint(spec: str | Path) -> str:
    """Identifies the student's exact starting weights (part of the training inputs' hash)."""
    from ioa.models.registry import EMBEDDED, embedded, sha256_file

    if str(spec) in EMBEDDED:
        return embedded(str(spec)).sha256
    directory, gguf = student_source(spec)
    return sha256_file(directory / gguf) if gguf else fingerprint_dir(directory)


def load_student(spec: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) in transformers; a GGUF is dequantized into a plain dense model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, gguf = student_source(spec)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if gguf:
        kwargs["gguf_file"] = gguf
        with contextlib.suppress(ImportError):  # transformers ≥ 5: ask for dense weights, not GGUF blocks
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
    start = time.perf_counter()
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf) if gguf else (
                AutoTokenizer.from_pretrained(directory)
            )
            model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(
            f"transformers could not load the student {spec}: {exc}",
            "use a GGUF of a supported architecture (llama, qwen2, …) or a Hugging Face directory",
        ) from exc
    _drop_quantizer(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    log.info("loaded student %s in %.1f s", spec, time.perf_counter() - start)
    return model, tokenizer


def _drop_quantizer(model: Any) -> None:
    """A dequantized GGUF model must not keep the GGUF quantizer: it blocks training and saving."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and getattr(quantizer.quantization_config, "quant_method", None) == "gguf":
        quantizer.remove_quantization_config(model)
    config = getattr(model.config, "quantization_config", None)
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    if method == "gguf":  # other quantization (bitsandbytes, AWQ…) is real and stays
        del model.config.quantization_config


# ------------------------------------------------------------------------------------------------- data


def to_prompt_completion(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, list[dict[str, str]]]]:
    """Conversational prompt-completion pairs: the loss goes on the last assistant turn only.

    Accepts {"messages": [..., {"role": "assistant", ...}]} and {"prompt": ..., "completion": ...} where
    each side is a string (a user turn / an assistant turn) or a list of messages. Other keys are ignored.
    """
    if not examples:
        raise DataError("no training examples", "pass at least one example")
    rows = []
    for i, ex in enumerate(examples):
        if "messages" in ex:
            messages = _messages(ex["messages"], i)
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise DataError(
                    f"example {i}: messages must end with an assistant turn after at least one other turn",
                    "append the answer as {'role': 'assistant', 'content': ...}",
                )
            prompt, completion = messages[:-1], messages[-1:]
        elif "prompt" in ex and "completion" in ex:
            prompt = _side(ex["prompt"], "user", i)
            completion = _side(ex["completion"], "assistant", i)
        else:
            raise DataError(
                f"example {i} has neither 'messages' nor 'prompt' and 'completion' (keys: {sorted(ex)})",
                "give each example a messages list or a prompt/completion pair",
            )
        if not any(m["content"].strip() for m in completion):
            raise DataError(f"example {i} has an empty answer", "drop it or give it an answer")
        rows.append({"prompt": prompt, "completion": completion})
    return rows


def _side(value: Any, role: str, i: int) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else _messages(value, i)


def _messages(value: Any, i: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"example {i}: messages must be a non-empty list", "see DESIGN §10 data.jsonl")
    out = []
    for m in value:
        if not (isinstance(m, Mapping) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise DataError(
                f"example {i}: bad message {m!r}", f"each message needs a role in {ROLES} and a string content"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


# ---------------------------------------------------------------------------------------------- trainer


def choose_method(cfg: TrainingConfig, n_params: int) -> str:
    if cfg.method != "auto":
        return cfg.method
    return "lora" if n_params >= cfg.lora_from_params else "full"


def _use_bf16(cfg: TrainingConfig) -> bool:
    import torch

    if cfg.precision == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cfg.precision == "bf16"


def sft_config(cfg: TrainingConfig, output_dir: Path, method: str, total_steps: int | None = None) -> Any:
    """TRL's SFTConfig for our settings (TRL's own defaults differ: bf16 and gradient checkpointing on).

    With `total_steps` known, warm-up is a whole number of steps rounded down: a fractional warm-up rounds up
    to one step at learning rate 0, which wastes the only step of a tiny training.
    """
    import torch
    from trl import SFTConfig

    fields = SFTConfig.__dataclass_fields__
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": cfg.epochs,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.lr_lora if method == "lora" else cfg.lr_full,
        "lr_scheduler_type": cfg.lr_scheduler,
        "optim": cfg.optimizer,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": _use_bf16(cfg),
        "fp16": False,
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning only helps copies to a GPU
        "max_length": cfg.max_seq_len,
        "completion_only_loss": True,
        "packing": False,  # packing needs FlashAttention to keep examples apart; bucketing works everywhere
        "logging_strategy": "steps",
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps" if cfg.checkpoint_steps else "no",
        "save_steps": cfg.checkpoint_steps or 500,
        "save_total_limit": 1,
        "report_to": "none",
        "disable_tqdm": True,
    }
    # transformers 5 replaced group_by_length / warmup_ratio with train_sampling_strategy / fractional warmup_steps
    if "train_sampling_strategy" in fields:
        kwargs["train_sampling_strategy"] = "group_by_length"
    else:
        kwargs["group_by_length"] = True
    # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    if "activation_checkpointing" in fields:
        kwargs["activation_checkpointing"] = cfg.gradient_checkpointing
    else:
        kwargs["gradient_checkpointing"] = cfg.gradient_checkpointing
    if total_steps is not None:
        kwargs["warmup_steps"] = int(cfg.warmup_ratio * total_steps)
    elif "warmup_ratio" in fields:
        kwargs["warmup_ratio"] = cfg.warmup_ratio
    else:
        kwargs["warmup_steps"] = cfg.warmup_ratio
    return SFTConfig(**kwargs)


def make_trainer(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    cfg: TrainingConfig,
    output_dir: Path,
    method: str | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """An SFTTrainer with the dataset tokenized and masked (its `train_dataset` holds input_ids/labels)."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    method = method or choose_method(cfg, _n_params(model))
    peft_config = None
    if method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
    from datasets import Dataset

    dataset = Dataset.from_list(to_prompt_completion(examples))
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps
    total_steps = -(-len(dataset) // per_step) * cfg.epochs
    with _quiet_datasets(), _quiet_deprecations():
        try:
            trainer = SFTTrainer(
                model=model,
                args=sft_config(cfg, output_dir, method, total_steps),
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=list(callbacks),
            )
        except ValueError as exc:
            if "target modules" in str(exc).lower() or "target_modules" in str(exc):
                raise ConfigError(
                    f"LoRA target modules {cfg.lora_target_modules} do not fit this student: {exc}",
                    "set training.lora_target_modules to module names of the model (e.g. q_proj)",
                ) from exc
            raise
    trainer.remove_callback(PrinterCallback)  # with tqdm off, Trainer would print every log dict to stdout
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise DataError(
            f"no example keeps any answer token within max_seq_len={cfg.max_seq_len}",
            "raise training.max_seq_len or shorten the prompts",
        )
    if kept < len(dataset):
        log.warning("%d of %d examples dropped: prompt longer than max_seq_len", len(dataset) - kept, len(dataset))
    return trainer


def _n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _progress_callback(progress: Callable[[TrainProgress], None] | None, sink: list[dict[str, float]]) -> Any:
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        """Records each logged step and reports it to `progress`; replaces Trainer's printing."""

        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return  # the closing summary (train_loss, train_runtime) is not a step
            row = {
                "step": state.global_step,
                "epoch": round(float(state.epoch or 0.0), 4),
                "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "seconds": round(time.perf_counter() - self.start, 3),
            }
            for key in ("grad_norm", "mean_token_accuracy", "num_tokens"):
                if key in logs:
                    row[key] = float(logs[key])
            sink.append(row)
            log.info("step %d/%d loss %.4f", state.global_step, state.max_steps, row["loss"])
            if progress is not None:
                progress(TrainProgress(
                    state.global_step, state.max_steps, row["epoch"], row["loss"], row["learning_rate"], row["seconds"]
                ))

    return _Progress()


# ------------------------------------------------------------------------------------------------ train


def inputs_hash(fingerprint: str, rows: list[dict[str, Any]], cfg: TrainingConfig) -> str:
    """What determines the trained weights: starting weights, data, settings."""
    payload = {"student": fingerprint, "examples": rows, "config": cfg.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def train(
    student: str | Path,
    examples: Sequence[Mapping[str, Any]],
    out_dir: Path,
    cfg: TrainingConfig | None = None,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Fine-tune `student` on `examples` and save the merged model in `out_dir` (see the module docstring).

    With `training.checkpoint_steps` set and `resume`, a run killed mid-training continues from its last
    checkpoint when called again with the same inputs.
    """
    cfg = cfg or TrainingConfig()
    out_dir = Path(out_dir)
    rows = to_prompt_completion(examples)
    fingerprint = student_fingerprint(student)
    digest = inputs_hash(fingerprint, rows, cfg)
    if (done := _finished(out_dir, digest)) is not None:
        log.info("%s is already trained with these inputs; reusing it", out_dir)
        return done

    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{digest[:12]}")
    checkpoints = tmp / "checkpoints"
    resume_from = resume and cfg.checkpoint_steps > 0 and any(checkpoints.glob("checkpoint-*"))
    _clear_stale(out_dir, keep=tmp if resume_from else None)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return _train_into(student, rows, out_dir, tmp, cfg, fingerprint, digest, progress, resume_from)
    except BaseException:
        if not any(checkpoints.glob("checkpoint-*")):  # nothing worth resuming from: leave no trace
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _train_into(
    student: str | Path,
    rows: list[dict[str, Any]],
    out_dir: Path,
    tmp: Path,
    cfg: TrainingConfig,
    fingerprint: str,
    digest: str,
    progress: Callable[[TrainProgress], None] | None,
    resume_from: bool,
) -> TrainResult:
    import torch

    checkpoints = tmp / "checkpoints"
    t0 = time.perf_counter()
    model, tokenizer = load_student(student)
    load_s = time.perf_counter() - t0
    n_params = _n_params(model)
    method = choose_method(cfg, n_params)
    seen: list[dict[str, float]] = []  # the steps logged by this process
    trainer = make_trainer(
        model, tokenizer, rows, cfg, checkpoints, method, callbacks=[_progress_callback(progress, seen)]
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    log.info("training %s (%s, %.0fM params, %.1fM trainable) on %d examples, %d epochs",
             student, method, n_params / 1e6, trainable / 1e6, len(trainer.train_dataset), cfg.epochs)
    t1 = time.perf_counter()
    with _quiet_deprecations():
        output = trainer.train(resume_from_checkpoint=True if resume_from else None)
    train_s = time.perf_counter() - t1
    steps_log = _step_log(trainer.state.log_history, seen)

    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    answer = [sum(1 for t in labels if t != -100) for labels in trainer.train_dataset["labels"]]
    tokens, completion_tokens = sum(lengths) * cfg.epochs, sum(answer) * cfg.epochs
    # TRL counts the tokens this process pushed through the model (from 0 again after a resume).
    done_tokens = int(seen[-1].get("num_tokens", tokens)) if seen else 0

    t2 = time.perf_counter()
    model = trainer.model
    if method == "lora":
        model = model.merge_and_unload()  # a plain model: no adapter files, loads anywhere
    save_model(model, tokenizer, tmp)
    shutil.rmtree(checkpoints, ignore_errors=True)
    fingerprint_dir(tmp)  # cached beside the weights now, so evaluation need not hash them again
    save_s = time.perf_counter() - t2

    losses = [row["loss"] for row in steps_log]
    metrics = {
        "log": steps_log,
        "steps": int(output.global_step),
        "final_loss": losses[-1] if losses else float(output.training_loss),
        "mean_loss": sum(losses) / len(losses) if losses else float(output.training_loss),
        "tokens": tokens,
        "completion_tokens": completion_tokens,
        "seconds": round(train_s, 3),
        "tokens_per_s": round(done_tokens / train_s, 2) if train_s > 0 else 0.0,
        "load_seconds": round(load_s, 3),
        "save_seconds": round(save_s, 3),
        "examples_dropped": len(rows) - len(lengths),
    }
    record = {
        "student": str(student),
        "student_fingerprint": fingerprint,
        "inputs_sha256": digest,
        "method": method,
        "params": n_params,
        "trainable_params": trainable,
        "examples": len(lengths),
        "device": str(trainer.args.device),
        "config": cfg.model_dump(mode="json"),
        "metrics": metrics,
        "versions": _versions(),
    }
    del trainer
    _write_json(tmp / RESULT_FILE, record)  # written last: its presence marks a complete directory
    os.replace(tmp, out_dir)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("saved %s (final loss %.4f, %.0f tokens/s)", out_dir, metrics["final_loss"], metrics["tokens_per_s"])
    result = TrainResult.from_dir(out_dir)
    result.reused = False
    return result


def _step_log(history: list[dict[str, Any]], seen: list[dict[str, float]]) -> list[dict[str, float]]:
    """One row per logged step of the whole run: Trainer's history survives a resume, our timings don't."""
    timed = {row["step"]: row for row in seen}
    rows = []
    for entry in history:
        if "loss" not in entry:
            continue  # the closing summary
        step = int(entry["step"])
        row = timed.get(step) or {"step": step, "epoch": round(float(entry.get("epoch", 0.0)), 4),
                                  "loss": float(entry["loss"]),
                                  "learning_rate": float(entry.get("learning_rate", 0.0))}
        rows.append(row)
    return rows


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Library warnings that ask nothing of an ioa user (transformers 5.24 renames TRL/PEFT still read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning)
        # PEFT looks for config.json where a GGUF student came from, to see whether the vocabulary changed
        warnings.filterwarnings("ignore", message=r"Could not find a config file", category=UserWarning)
        yield


def _finished(out_dir: Path, digest: str) -> TrainResult | None:
    if not out_dir.exists():
        return None
    result = out_dir / RESULT_FILE
    if not result.exists():
        raise ConfigError(
            f"{out_dir} exists but is not a finished training output (no {RESULT_FILE})",
            "delete it or choose another output directory",
        )
    recorded = json.loads(result.read_text()).get("inputs_sha256")
    if recorded != digest:
        raise ConfigError(
            f"{out_dir} holds a student trained on other inputs (data, settings or starting model)",
            "delete it to retrain, or choose another output directory",
        )
    return TrainResult.from_dir(out_dir)


def _clear_stale(out_dir: Path, keep: Path | None) -> None:
    """Remove half-written siblings (OUT.tmp-*) left by killed runs, except the one being resumed."""
    for stale in out_dir.parent.glob(f"{out_dir.name}.tmp-*"):
        if stale != keep and stale.is_dir():
            log.info("removing unfinished %s", stale)
            shutil.rmtree(stale, ignore_errors=True)


def save_model(model: Any, tokenizer: Any, directory: Path) -> None:
    """Weights (safetensors), config, generation config, tokenizer and chat template."""
    model.config.use_cache = True  # training turns the KV cache off; generation wants it back
    gen = model.generation_config
    gen.eos_token_id = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    with quiet_transformers():
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "transformers", "trl", "peft", "ioa"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


# ------------------------------------------------------------------------------------------ entry point


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m ioa.training` (or under `accelerate launch`): fine-tune a student on a JSONL of examples.

    Each line is {"messages": [...]} or {"prompt": ..., "completion": ...}; `--config` is a YAML mapping
    of TrainingConfig fields.
    """
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m ioa.training", description=main.__doc__)
    parser.add_argument("--student", required=True, help="embedded name, .gguf or Hugging Face directory")
    parser.add_argument("--data", required=True, type=Path, help="JSONL of training examples")
    parser.add_argument("--out", required=True, type=Path, help="output directory (written atomically)")
    parser.add_argument("--config", type=Path, help="YAML with TrainingConfig fields")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text()) if args.config else {}
    cfg = TrainingConfig.model_validate(raw or {})
    examples = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    result = train(args.student, examples, args.out, cfg)
    print(json.dumps({"out": str(result.out_dir), "method": result.method, "steps": result.steps,
                      "final_loss": result.final_loss, "reused": result.reused}))


if __name__ == "__main__":
    main()

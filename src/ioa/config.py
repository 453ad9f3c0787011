"""Every threshold of the method lives here, with DESIGN's numbers as defaults. YAML in, YAML out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ioa.errors import ConfigError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HTTPConfig(Strict):
    """An OpenAI-compatible teacher endpoint (vLLM, SGLang, llama-server, a hosted API): ModelConfig.http."""

    model: str | None = None  # the endpoint's model id (sent as `model`); None = first of GET /v1/models
    base_model: str | None = None  # the weights behind it (e.g. Qwen/Qwen2.5-7B-Instruct); part of the cache key
    name: str | None = None  # display/price-table name; default base_model, else model
    endpoints: list[str] = Field(default_factory=list)  # more replicas of the same model besides `spec`
    # The NAME of the environment variable that holds the API key; the key itself never enters a config.
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_in_flight: int = Field(8, ge=1)
    timeout_s: float = Field(300.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    balance: Literal["least_in_flight", "round_robin"] = "least_in_flight"
    # How ChatRequest.response_format is sent: OpenAI json_schema (vLLM, SGLang, llama-server, OpenAI),
    # json_object + schema (llama-cpp-python's server), or not at all.
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    # "llama.cpp" adds llama.cpp sampling fields so replies equal in-process llama-cpp-python's.
    dialect: Literal["openai", "llama.cpp"] = "openai"
    extra_body: dict[str, Any] = Field(default_factory=dict)  # merged into every request body
    slow_warning_s: float | None = Field(None, gt=0)  # replies slower than this are counted as "slow"
    failure_summary: Path | None = None  # JSON summary of failed attempts, rewritten after each batch

    @model_validator(mode="after")
    def _not_a_key(self) -> HTTPConfig:
        if self.api_key_env and self.api_key_env.lower().startswith(("sk_", "sk-")):
            raise ValueError("api_key_env looks like a key; give the NAME of the variable that holds it")
        return self


class PriceConfig(Strict):
    """USD per million tokens."""

    prompt_per_mtok: float = Field(0.0, ge=0)
    completion_per_mtok: float = Field(0.0, ge=0)


class AccountingConfig(Strict):
    """Teacher cost accounting: a price table by model name ("*" = any other model) and hard caps."""

    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    max_cost_usd: float | None = Field(None, ge=0)
    max_total_tokens: int | None = Field(None, ge=1)


class ModelConfig(Strict):
    """A model: embedded name, .gguf path, Hugging Face directory or http(s) URL."""

    spec: str
    n_ctx: int = Field(4096, ge=256)
    max_tokens: int = Field(512, ge=1)
    http: HTTPConfig | None = None  # endpoint settings when spec is an http(s) URL


class TrainingConfig(Strict):
    """Fine-tuning the student (DESIGN §5): full below 1B parameters, LoRA from 1B up, both through TRL."""

    # "auto": full fine-tuning below lora_from_params, LoRA at or above (LoRA underfits tiny students: measured
    # on SmolLM2-135M, loss 0.65 vs 0.085 for full fine-tuning).
    method: Literal["auto", "full", "lora"] = "auto"
    lora_from_params: int = Field(1_000_000_000, ge=1)
    lr_full: float = Field(5e-5, gt=0)
    lr_lora: float = Field(2e-4, gt=0)
    epochs: int = Field(2, ge=1, le=3)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    optimizer: Literal["adamw_torch"] = "adamw_torch"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # Longer examples are truncated (their prompt kept); an example left with no answer tokens is dropped.
    max_seq_len: int = Field(1024, ge=16)
    seed: int = 0
    # Off: the students are small, and recomputation costs ≈ 20% more time on CPU.
    gradient_checkpointing: bool = False
    # "auto": bf16 mixed precision on a GPU that supports it, float32 elsewhere (CPU bf16 is slower).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    logging_steps: int = Field(1, ge=1)
    # Mid-training checkpoints (0 = none) let a killed run resume; each holds the optimizer state (≈ 3× weights).
    checkpoint_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _targets(self) -> TrainingConfig:
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module (e.g. q_proj)")
        return self


class IdentifierConfig(Strict):
    # Off (ablation "without Identifier", `ioa bench`): teach every selected module with the same share of
    # data, without gap-based selection or severity ranking. Probing still runs (the gates need P_T).
    enabled: bool = True
    probes_per_module: int = Field(20, ge=1)
    tau_gap: float = Field(0.3, ge=0, le=1)
    tau_high: float = Field(0.9, ge=0, le=1)
    tau_low: float = Field(0.7, ge=0, le=1)
    tau_dep: float = Field(0.3, ge=0, le=1)
    epsilon: float = Field(1e-8, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    target_fraction: float = Field(0.25, gt=0, le=1)
    min_snapshots_for_measured_edges: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _ordered(self) -> IdentifierConfig:
        if self.tau_low > self.tau_high:
            raise ValueError(f"tau_low ({self.tau_low}) must not exceed tau_high ({self.tau_high})")
        return self


class OrganizerConfig(Strict):
    # Off (ablation "without Organizer", `ioa bench`): one stage with every target, trained once; no gate,
    # no remediation, no bridging, no forgetting guard.
    staged: bool = True
    tau_zpd: float = Field(0.15, ge=0, le=1)
    tau_mastery: float = Field(0.9, ge=0, le=1)
    gate_mode: Literal["point", "lcb"] = "lcb"
    gate_items_per_module: int = Field(50, ge=1)
    max_remediation_rounds: int = Field(3, ge=0)
    on_unmastered: Literal["continue", "stop"] = "continue"
    bridging_fraction: float = Field(0.1, ge=0, le=1)
    replay_fraction: float = Field(0.2, ge=0, le=1)
    # Spaced review (beyond the paper): every later training also sees this share of each earlier-taught
    # module's data, mastered or not. Measured here: without it, stage 2 of the demo undid most of stage 1's
    # gain on an unmastered prerequisite (55% → 17.5% held-out), which the mastered-only guard never sees;
    # with 0.25, stage 2 (multi-digit sums as bare answers) still took 3-4-addend sums from 31/36 at the stage-1
    # gate to 2/18 held-out; with 1.0 (all earlier data again) they stayed at 12/18. Training grows with stages.
    review_fraction: float = Field(1.0, ge=0, le=1)
    # A remedial round trains on its remedial data plus the stage's data again, not on the small remedial
    # batch alone (measured: 19 remedial samples alone dropped a module from 12/36 to 4/36 at its gate).
    remediation_includes_stage_data: bool = True
    # A remedial round retrains from the student the stage started with (on remedial + stage data) instead
    # of training the stage's student further. Measured: two more epochs on the same bare-answer stage data
    # collapsed SmolLM2-135M to one answer for every problem ("#### 12"; gate 22/36 → 6/36).
    remediation_from_stage_start: bool = True
    # A stage that is not mastered keeps the student of its best gate (mean P_S/P_T over the stage's
    # modules, on fresh gate items each round), so a remedial round that made things worse is rolled back.
    keep_best_round: bool = True
    # Difficulty ladder (§3.2): a level counts as solved reliably when its accuracy (point estimate or
    # Wilson lower bound, per level_mode) reaches tau_level. Point by default: per-level probe sets are
    # small and a lower bound on 4-5 items would never clear 0.8, so every module would restart at level 1.
    tau_level: float = Field(0.8, ge=0, le=1)
    level_mode: Literal["point", "lcb"] = "point"
    # How many levels a module's data climbs from its entry level (None: up to the top). Capped at 3, a
    # student entering at level 1 never saw levels 4-5 of a module and scored 0/9 on them (bench_small).
    ladder_rungs: int | None = Field(None, ge=1)
    # Where remedial data enters the ladder: "frontier" = the lowest level the failed gate found unsolved
    # (read per level from the gate's items), "easier" = one level below the entry per round.
    remedial_levels: Literal["frontier", "easier"] = "frontier"
    # Remedial data (§3.4, "smaller"): per failing module, this share of what it got in the stage.
    remediation_fraction: float = Field(0.5, gt=0, le=1)
    # Upper bound on gate probes per module; a tau_mastery the lcb gate cannot reach within it is an error.
    gate_items_max: int = Field(1000, ge=1)


class AdapterConfig(Strict):
    """How the teacher writes training data (DESIGN §4)."""

    # Off (ablation "without Adapter", `ioa bench`): the teacher's plain step-by-step solution: no strategies,
    # no level ladder (items spread over all levels), representation steps, no calibration, no easier remedial
    # data. The switches below are then ignored.
    enabled: bool = True
    # The five teaching strategies, each on/off.
    concretization: bool = True
    decomposition: bool = True
    cognitive_load: bool = True
    fixed_format: bool = True
    plain_language: bool = True
    # How a verified teacher solution is shown to the student. "auto" lets the calibration pilot choose
    # per module among `candidates`: measured here, bare answers taught SmolLM2-135M at least as well as steps.
    representation: Literal["auto", "bare", "short", "steps", "plain"] = "auto"
    # Candidates for "auto", earliest first on a tie. "plain" is the teacher's own solution without the five
    # strategies; "steps" the Adapter's worked solution. Measured on SmolLM2-135M (arithmetic, 1.5B teacher):
    # pilots with steps reached 8% / 0% where bare reached 67% / 17%, so steps is opt-in.
    candidates: list[Literal["bare", "short", "steps", "plain"]] = ["bare", "plain"]
    # How "auto" chooses. "stage": each stage's first training is done once per candidate (all rendered from
    # the same verified teacher solutions, so no teacher token is spent twice) and the stage's gate items
    # decide, at the scale and levels actually taught; candidates from another set of solutions than the
    # first non-bare one are skipped. "pilot": a small separate pilot before stage 1 (per module). Measured:
    # a 16-sample pilot chose bare for single-digit sums (67% vs 54%), while at the stage's 64 samples plain
    # was better at the gate (26/36 vs 22/36; 3-4 addends need the running sum written out).
    calibration: Literal["stage", "pilot"] = "stage"
    samples_per_module: int = Field(48, ge=1)
    pilot_samples_per_module: int = Field(12, ge=1)
    pilot_eval_items: int = Field(20, ge=1)
    max_attempts: int = Field(2, ge=1)
    teacher_max_tokens: int = Field(384, ge=16)
    dedup_threshold: float = Field(0.9, gt=0, le=1)
    decontam_ngram: int = Field(8, ge=1)


class DomainConfig(Strict):
    name: str = "arithmetic"
    data_path: Path | None = None
    # Teach only these modules (all of the domain's when empty); prerequisites outside count as given.
    modules: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)


class EvaluationConfig(Strict):
    """Held-out measurement: items the student never saw in probes, gates or training."""

    benchmark_items_per_module: int = Field(50, ge=1)
    # Student answers are short once it has learned the format; an untrained student may ramble.
    student_max_tokens: int = Field(160, ge=8)
    batch_size: int = Field(16, ge=1)


class DataBudgetConfig(Strict):
    """A compute-matched run (`ioa bench`): stop writing data at max_samples verified samples or when the next
    teacher call could take the run past max_teacher_tokens. Tokens count every teacher reply the run uses,
    from the call cache or not (the method's own cost, as if it ran alone), diagnosis probing included.
    With a budget, a request whose replies are dropped (wrong, duplicate, contaminated) is topped up with
    fresh items, up to fill_rounds times. Unset: no limit (plain `ioa run`)."""

    max_samples: int | None = Field(None, ge=0)
    max_teacher_tokens: int | None = Field(None, ge=0)
    fill_rounds: int = Field(3, ge=0)

    @property
    def active(self) -> bool:
        return self.max_samples is not None or self.max_teacher_tokens is not None


class RunConfig(Strict):
    """The resolved configuration of a run (written to runs/NAME/config.yaml)."""

    name: str = "default"
    runs_dir: Path = Path("runs")
    seed: int = 0
    teacher: ModelConfig = ModelConfig(spec="qwen2.5-coder-1.5b", max_tokens=512)
    student: ModelConfig = ModelConfig(spec="smollm2-135m", max_tokens=256)
    domain: DomainConfig = DomainConfig()
    identifier: IdentifierConfig = IdentifierConfig()
    organizer: OrganizerConfig = OrganizerConfig()
    training: TrainingConfig = TrainingConfig()
    adapter: AdapterConfig = AdapterConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    accounting: AccountingConfig = AccountingConfig()
    budget: DataBudgetConfig = DataBudgetConfig()

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name


def _format_validation(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{source}: {where}: {first['msg']}"


def read_yaml_mapping(path: Path, what: str, missing_fix: str, example: str) -> dict[str, Any]:
    """A YAML file holding a mapping; a missing file, bad syntax or another shape is one ConfigError line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist", missing_fix)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings", f"see {example} for an example")
    return raw


def load_config(path: Path) -> RunConfig:
    """Read and validate a YAML config; any problem becomes one ConfigError line."""
    raw = read_yaml_mapping(path, "config file", "check the path", "src/ioa/presets/demo.yaml")
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source), "fix or remove that setting") from None


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------------------- ioa bench

BenchMethod = Literal[
    "ioa", "undistilled", "standard", "self_instruct", "llm2llm", "no_identifier", "no_organizer", "no_adapter"
]
BENCH_METHODS: tuple[str, ...] = get_args(BenchMethod)


class BenchmarksConfig(Strict):
    """What every method's final student (and the teacher, once) is scored on."""

    # Held-out items of the run's domain (its benchmark split), per module, drawn with a bench-level seed that
    # no run uses (arithmetic; for the gsm8k domain the GSM8K benchmark below is its held-out set).
    domain_items_per_module: int = Field(24, ge=1)
    # Extra modules of the domain scored besides the taught ones (to see forgetting of what was known).
    extra_modules: list[str] = Field(default_factory=list)
    # Code domain: HumanEval, its first humaneval_items problems in the published order (None = all 164).
    humaneval_items: int | None = Field(None, ge=1)
    # GSM8K test: the first gsm8k_items problems of test.jsonl in file order (None = all 1,319). 50 keeps a
    # CPU bench affordable (a student answer is up to gsm8k_max_tokens tokens, the teacher's up to 512).
    gsm8k: bool = True
    gsm8k_items: int | None = Field(50, ge=1)
    gsm8k_path: Path | None = None  # default ../shared/data/gsm8k (as the gsm8k domain)
    gsm8k_max_tokens: int = Field(256, ge=8)
    teacher_gsm8k_max_tokens: int = Field(512, ge=8)  # the teacher writes long GSM8K solutions (DESIGN §7)
    seed: int = 1_000_003  # the held-out draw; distinct from the runs' seeds (0, 1, 2, ...)


class BenchBudgetConfig(Strict):
    """The compute match: every method may use IOA's verified samples N and teacher tokens T (per seed)."""

    tolerance: float = Field(0.05, ge=0, lt=1)
    # A method short of N samples (it spent T first, or ran out of seed items, requests or rounds) did not
    # match: an error, or with "record" kept and marked (token-limited / under-used) in bench.md.
    on_shortfall: Literal["error", "record"] = "error"


class BaselinesConfig(Strict):
    self_instruct_examples: int = Field(3, ge=1)  # seed problems shown per Self-Instruct request
    self_instruct_temperature: float = Field(0.7, ge=0)
    llm2llm_rounds: int = Field(2, ge=1)  # augmentation rounds (trainings: rounds + 1)
    llm2llm_seed_fraction: float = Field(0.5, gt=0, le=1)  # share of N that is seed data
    llm2llm_per_failure: int = Field(1, ge=1)  # new items per failed seed item (the last round fills up)


class BootstrapConfig(Strict):
    resamples: int = Field(10_000, ge=100)
    seed: int = 0


class BenchConfig(Strict):
    """`ioa bench CONFIG`: methods × seeds in one harness, same teacher, student, seed data and budget."""

    name: str = "bench"
    benches_dir: Path = Path("benches")
    seeds: int = Field(3, ge=1)
    methods: list[BenchMethod] = Field(default_factory=lambda: list(BENCH_METHODS))  # type: ignore[arg-type]
    run: RunConfig = RunConfig()
    benchmarks: BenchmarksConfig = BenchmarksConfig()
    budget: BenchBudgetConfig = BenchBudgetConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()

    @property
    def bench_dir(self) -> Path:
        return self.benches_dir / self.name

    @model_validator(mode="after")
    def _methods(self) -> BenchConfig:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods lists a method twice")
        if not self.methods:
            raise ValueError("methods is empty; name at least one of " + ", ".join(BENCH_METHODS))
        return self


def load_bench_config(path: Path) -> BenchConfig:
    """A bench YAML (bench settings plus the IOA run config under `run:`); any problem is one ConfigError."""
    raw = read_yaml_mapping(path, "bench config", "check the path (e.g. the bench_small preset)",
                            "src/ioa/presets/bench_small.yaml")
    return bench_config_from_dict(raw, source=str(path))


def bench_config_from_dict(raw: dict[str, Any], source: str = "bench config") -> BenchConfig:
    try:
        return BenchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source), "fix or remove that setting") from None

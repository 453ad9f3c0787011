"""Every threshold of the method lives here, with DESIGN's numbers as defaults. YAML in, YAML out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ioa.errors import ConfigError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    """A model: embedded name, .gguf path, Hugging Face directory or http(s) URL."""

    spec: str
    n_ctx: int = Field(4096, ge=256)
    max_tokens: int = Field(512, ge=1)


class IdentifierConfig(Strict):
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
    tau_zpd: float = Field(0.15, ge=0, le=1)
    tau_mastery: float = Field(0.9, ge=0, le=1)
    gate_mode: Literal["point", "lcb"] = "lcb"
    gate_items_per_module: int = Field(50, ge=1)
    max_remediation_rounds: int = Field(3, ge=0)
    on_unmastered: Literal["continue", "stop"] = "continue"
    bridging_fraction: float = Field(0.1, ge=0, le=1)
    replay_fraction: float = Field(0.2, ge=0, le=1)
    # Difficulty ladder (§3.2): a level counts as solved reliably when its accuracy (point estimate or
    # Wilson lower bound, per level_mode) reaches tau_level. Point by default: per-level probe sets are
    # small and a lower bound on 4-5 items would never clear 0.8, so every module would restart at level 1.
    tau_level: float = Field(0.8, ge=0, le=1)
    level_mode: Literal["point", "lcb"] = "point"
    # Remedial data (§3.4, "smaller"): per failing module, this share of what it got in the stage.
    remediation_fraction: float = Field(0.5, gt=0, le=1)
    # Upper bound on gate probes per module; a tau_mastery the lcb gate cannot reach within it is an error.
    gate_items_max: int = Field(1000, ge=1)


class DomainConfig(Strict):
    name: str = "arithmetic"
    data_path: Path | None = None
    options: dict[str, Any] = Field(default_factory=dict)


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

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name


def _format_validation(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{source}: {where}: {first['msg']}"


def load_config(path: Path) -> RunConfig:
    """Read and validate a YAML config; any problem becomes one ConfigError line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist", "check the path")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings", "see configs/ for examples")
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source), "fix or remove that setting") from None


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

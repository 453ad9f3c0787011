"""Config: DESIGN's defaults, strict validation with the dotted path of the culprit, YAML in and out."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioa.config import RunConfig, config_from_dict, dump_config, load_config
from ioa.errors import ConfigError, IoaError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_are_designs_numbers() -> None:
    c = RunConfig()
    i, o, a = c.identifier, c.organizer, c.adapter
    assert (i.tau_gap, i.tau_high, i.tau_low, i.tau_dep, i.alpha, i.target_fraction) == (0.3, 0.9, 0.7, 0.3, 0.7, 0.25)
    assert i.epsilon == 1e-8
    assert (o.tau_zpd, o.tau_mastery, o.gate_mode, o.max_remediation_rounds) == (0.15, 0.9, "lcb", 3)
    assert o.gate_items_per_module >= 50
    assert o.replay_fraction == 0.2
    assert (c.training.lr_full, c.training.warmup_ratio, c.training.batch_size) == (5e-5, 0.03, 8)
    assert (c.training.lora_r, c.training.lora_alpha, c.training.lora_dropout) == (16, 32, 0.05)
    assert (c.teacher.spec, c.student.spec) == ("qwen2.5-coder-1.5b", "smollm2-135m")
    assert all(getattr(a, s) for s in ("concretization", "decomposition", "cognitive_load", "fixed_format"))
    assert c.run_dir == Path("runs") / "default"


def test_config_error_is_an_ioa_error_with_a_fix() -> None:
    with pytest.raises(IoaError) as info:
        config_from_dict({"nmae": "x"})
    assert isinstance(info.value, ConfigError)
    assert info.value.fix


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"nmae": "typo"}, "nmae"),
        ({"identifier": {"tau_gapp": 0.2}}, "identifier.tau_gapp"),
        ({"adapter": {"decompositon": False}}, "adapter.decompositon"),
        ({"teacher": {"spec": "x", "http": {"max_inflight": 3}}}, "teacher.http.max_inflight"),
    ],
)
def test_unknown_key_names_its_dotted_path(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="my.yaml")
    message = str(info.value)
    assert message.startswith(f"my.yaml: {where}:")
    assert "xtra" in message or "not permitted" in message  # pydantic's "Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"identifier": {"tau_gap": 1.5}}, "identifier.tau_gap"),
        ({"identifier": {"tau_gap": -0.1}}, "identifier.tau_gap"),
        ({"organizer": {"tau_mastery": 1.01}}, "organizer.tau_mastery"),
        ({"identifier": {"probes_per_module": 0}}, "identifier.probes_per_module"),
        ({"training": {"epochs": 4}}, "training.epochs"),
        ({"organizer": {"gate_mode": "median"}}, "organizer.gate_mode"),
        ({"identifier": {"tau_gap": "high"}}, "identifier.tau_gap"),
    ],
)
def test_out_of_range_values(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert str(info.value).startswith(f"config: {where}:")


def test_tau_low_above_tau_high_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"identifier.*tau_low \(0\.95\) must not exceed tau_high \(0\.9\)"):
        config_from_dict({"identifier": {"tau_low": 0.95}})
    assert config_from_dict({"identifier": {"tau_low": 0.9, "tau_high": 0.9}}).identifier.tau_low == 0.9


def test_load_config_reads_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "name: trial\nidentifier:\n  tau_gap: 0.4\nadapter:\n  plain_language: false\n")
    c = load_config(path)
    assert (c.name, c.identifier.tau_gap, c.adapter.plain_language) == ("trial", 0.4, False)
    assert c.identifier.tau_high == 0.9  # untouched settings keep their defaults


def test_load_config_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "identifier:\n  tau_gap: 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: identifier.tau_gap:")


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: ok\nidentifier:\n  tau_gap: 0.3\n  tau_high: [0.9\nseed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "not valid YAML" in message
    line = int(message.split(" at line ")[1].split()[0])
    assert 4 <= line <= 5  # the unclosed bracket opens on line 4; PyYAML reports where it gave up


def test_tab_indentation_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2"):
        load_config(write(tmp_path, "identifier:\n\ttau_gap: 0.3\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, text))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == RunConfig()


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    original = config_from_dict(
        {
            "name": "round",
            "runs_dir": str(tmp_path / "runs"),
            "seed": 7,
            "teacher": {"spec": "http://localhost:8000/v1", "http": {"max_in_flight": 4, "api_key_env": "MY_KEY"}},
            "domain": {"name": "gsm8k", "data_path": str(tmp_path / "gsm8k"), "modules": ["money"]},
            "identifier": {"tau_gap": 0.25, "tau_low": 0.6},
            "organizer": {"gate_mode": "point"},
            "adapter": {"representation": "steps", "candidates": ["short", "steps"], "concretization": False},
            "accounting": {"prices": {"*": {"prompt_per_mtok": 0.5}}, "max_cost_usd": 2.0},
        }
    )
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(original))
    again = load_config(path)
    assert again == original
    assert isinstance(again.domain.data_path, Path)
    assert dump_config(again) == dump_config(original)


def test_default_config_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(RunConfig()))
    assert load_config(path) == RunConfig()


def test_assignment_is_validated_too() -> None:
    c = RunConfig()
    with pytest.raises(ValueError):
        c.identifier.tau_gap = 2.0

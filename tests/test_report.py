"""`ioa report`: the report of a small REAL run directory (tests/fixtures/run_small, the JSON files of an
`ioa run` of the tiny arithmetic config), its figures, escaping of model-written text, degradation when
parts are missing, and the command line."""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ioa import report, ui
from ioa.cli import app
from ioa.report import funnel, load_run, md_code, phase_times, write_report

FIXTURE = Path(__file__).parent / "fixtures" / "run_small"
SECTION_IDS = ("summary", "config", "accuracy", "curriculum", "mastery", "remediation", "data", "cost", "examples")
FIGURES = ("accuracy", "graph", "mastery", "data", "training", "time")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui.console, "width", 400)  # long tmp paths stay on one line


def copy_run(tmp_path: Path, name: str = "run") -> Path:
    """A writable copy of the fixture (the report is written into the run directory)."""
    dst = tmp_path / name
    shutil.copytree(FIXTURE, dst)
    return dst


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, report.ReportFiles]:
    run_dir = copy_run(tmp_path_factory.mktemp("report"))
    return run_dir, write_report(run_dir)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk (the first chunk of every PNG)."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------------------- the fixture


def test_fixture_is_a_finished_real_run() -> None:
    events = [json.loads(line) for line in (FIXTURE / "events.jsonl").read_text().splitlines() if line.strip()]
    kinds = {e["event"] for e in events}
    assert {"diagnosed", "synthesised", "trained", "gate", "stage_done", "run_done"} <= kinds
    assert (FIXTURE / "final.json").exists() and (FIXTURE / "curriculum.json").exists()
    assert list(FIXTURE.glob("stages/*/data.jsonl")) and list(FIXTURE.glob("stages/*/**/ioa_train.json"))
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 300_000
    assert not [p for p in FIXTURE.rglob("*") if p.suffix in (".safetensors", ".sqlite", ".gguf", ".bin")]


# ------------------------------------------------------------------------------------------- the report


def test_every_section_is_present(rendered: tuple[Path, report.ReportFiles]) -> None:
    run_dir, files = rendered
    page = files.html.read_text(encoding="utf-8")
    md = files.markdown.read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page, sid
        assert f'href="#{sid}"' in page, sid
    for _, title in report.SECTIONS:
        assert f"\n## {report.md_esc(title)}\n" in md, title
    assert page.count("<section") == page.count("</section>")
    run = load_run(run_dir)
    for module in run.modules:  # every module in the accuracy table and with its examples
        assert f"<td>{module}</td>" in page
    for module in run.targets:
        assert f"<h3>{module}</h3>" in page
    assert "This run has not finished" not in page  # the fixture is a finished run


def assert_figures(root: Path, files: report.ReportFiles, names: Iterable[str]) -> None:
    """Each named figure is a real PNG of some size under root/figures, linked from report.md, and the
    embedded images of report.html are exactly the saved files."""
    import base64

    import matplotlib.image

    page = files.html.read_text(encoding="utf-8")
    md = files.markdown.read_text(encoding="utf-8")
    names = set(names)
    assert {p.stem for p in files.figures} == names
    for name in names:
        path = root / "figures" / f"{name}.png"
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > 5_000, (name, len(data))
        width, height = png_size(data)
        assert width > 300 and height > 150, (name, width, height)
        assert matplotlib.image.imread(str(path)).shape[:2] == (height, width)
        assert f"](figures/{name}.png)" in md
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(b) for b in embedded) == sorted(p.read_bytes() for p in files.figures)


def test_every_figure_is_a_real_png_and_embedded(rendered: tuple[Path, report.ReportFiles]) -> None:
    assert_figures(*rendered, FIGURES)


def test_page_is_self_contained(rendered: tuple[Path, report.ReportFiles]) -> None:
    page = rendered[1].html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', page), "only inline data and in-page links"
    assert "<link" not in page.lower() and "@import" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_numbers_match_the_run(rendered: tuple[Path, report.ReportFiles]) -> None:
    run_dir, files = rendered
    run = load_run(run_dir)
    page = files.html.read_text(encoding="utf-8")
    final = json.loads((run_dir / "final.json").read_text())
    for c in final["comparisons"]:
        before, after = c["before"], c["after"]
        assert f"({before[0]}/{before[1]})" in page and f"({after[0]}/{after[1]})" in page
    generated = sum(f.accounting["generated"] for f in run.data_files if f.accounting)
    kept = sum(f.accounting["kept"] for f in run.data_files if f.accounting)
    assert f"<td>all files</td><td></td><td>{generated}</td>" in page
    assert f"<td>{kept}</td>" in page
    tau = run.cfg("organizer", "tau_mastery")
    assert f"τ_mastery = {tau:g}" in page
    phases, total, note = phase_times(run)
    done = run.events_of("run_done")[-1]
    first, last = run.events[0]["time"], run.events[-1]["time"]
    if done["time"] - done["seconds"] <= first:  # one invocation: every second of it is charged once
        assert total == pytest.approx(done["seconds"], rel=0.01)
    else:  # resumed: the last invocation in full, the earlier ones from their first event, no pause between
        assert "resumed" in note
        assert done["seconds"] <= total + 1e-6 and total <= last - first
    assert any(name.startswith("training") for name, _ in phases)
    assert any(name.startswith("final evaluation") for name, _ in phases)


def test_model_written_text_is_escaped(tmp_path: Path) -> None:
    run_dir = copy_run(tmp_path)
    data = next(iter(sorted(run_dir.glob("stages/*/data.jsonl"))))
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    evil = '</pre><script>alert("x")</script><img src=x onerror=alert(1)> | ``` **bold** [l](http://e.x)'
    rows[0]["completion"] = evil
    rows[0]["prompt"][-1]["content"] = evil
    rows[0]["lineage"]["teacher"] = '"><script>alert(2)</script>'
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = write_report(run_dir)
    page = files.html.read_text(encoding="utf-8")
    md = files.markdown.read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script" not in md.replace("```text\n" + evil, "")  # only inside a code block
    assert "````text\n" + evil + "\n````" in md  # the fence is longer than any backtick run in the text


def test_markdown_fence_cannot_be_closed_from_inside() -> None:
    assert md_code("a ``` b").startswith("````text\n")
    assert md_code("plain").startswith("```text\n")


# ------------------------------------------------------------------------------------------ degradation


def test_diagnosis_only_renders_with_not_recorded(tmp_path: Path) -> None:
    run_dir = tmp_path / "diag"
    shutil.copytree(FIXTURE / "diagnosis", run_dir / "diagnosis")
    shutil.copy(FIXTURE / "config.yaml", run_dir / "config.yaml")
    files = write_report(run_dir)
    page = files.html.read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page
    assert "This run has not finished" in page
    assert "not recorded" in page
    assert {p.stem for p in files.figures} == {"accuracy", "graph"}


def test_damaged_optional_file_is_a_warning(tmp_path: Path) -> None:
    run_dir = copy_run(tmp_path)
    (run_dir / "curriculum.json").write_text("{ not json")
    with (run_dir / "events.jsonl").open("a") as f:
        f.write('{"time": 1, "event": "torn')  # a crash mid-append
    files = write_report(run_dir)
    page = files.html.read_text(encoding="utf-8")
    assert "curriculum.json cannot be read" in page
    assert '<section id="mastery">' in page


def test_phase_times_from_events(tmp_path: Path) -> None:
    """Each interval goes to the event that ends it; a training's own seconds are split from the rest; the
    pause before a resumed invocation counts nowhere."""
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE / "diagnosis", run_dir / "diagnosis")
    events = [
        {"time": 100.0, "event": "diagnosed"},
        {"time": 160.0, "event": "synthesised", "file": "stages/01/data.main.jsonl"},
        {"time": 260.0, "event": "trained", "at": "stages/01/student", "seconds": 80.0},
        {"time": 300.0, "event": "gate", "stage": 1},
        # killed here; resumed at 1000 (run_done.time - seconds)
        {"time": 1030.0, "event": "stage_done", "stage": 1},
        {"time": 1100.0, "event": "run_done", "seconds": 100.0},
    ]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    phases, total, note = phase_times(load_run(run_dir))
    got = dict(phases)
    assert got == {
        "initial snapshot + synthesis: stage data": 60.0,
        "training": 80.0,
        "model loading/saving + untimed evaluation": 20.0,
        "evaluation: mastery gates": 40.0,
        "bookkeeping": 30.0,
        "final evaluation + publishing the student": 70.0,
    }
    assert total == 300.0 and "resumed" in note


def test_funnel_arithmetic() -> None:
    acc = {"generated": 20, "kept": 9, "drops": {"no_json": 1, "schema": 2, "wrong_answer": 5,
                                                 "near_duplicate": 2, "contaminated": 1}}
    assert funnel(acc) == {"generated": 20, "valid": 17, "verified": 12, "deduplicated": 10, "clean": 9, "kept": 9}


# ------------------------------------------------------------------------------------------ command line


def test_cli_report_prints_the_paths(tmp_path: Path) -> None:
    run_dir = copy_run(tmp_path)
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.split()
    assert str(run_dir / "report.html") in lines and str(run_dir / "report.md") in lines
    assert all(str(run_dir / "figures" / f"{n}.png") in lines for n in FIGURES)


@pytest.mark.parametrize("case", ["missing", "empty", "bad_scores"])
def test_cli_report_errors(tmp_path: Path, case: str) -> None:
    run_dir = tmp_path / "run"
    if case == "empty":
        run_dir.mkdir()
    elif case == "bad_scores":
        (run_dir / "diagnosis").mkdir(parents=True)
        (run_dir / "diagnosis" / "scores.json").write_text('{"scores": [{"module": "a"}]}')
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and " — " in errors[0], result.output
    assert not (run_dir / "report.html").exists()
    if case == "missing":
        assert not run_dir.exists()  # reporting never creates a run directory


def test_run_writes_the_report_and_survives_a_report_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The end of `ioa run`: the report is written; a broken report is a warning, never a failed run."""
    from ioa import cli
    from ioa import run as run_module
    from ioa.config import RunConfig
    from ioa.evaluation import Comparison
    from ioa.stats import Proportion

    run_dir = copy_run(tmp_path)
    summary = run_module.RunSummary(run_dir, [Comparison("m", Proportion(1, 4), Proportion(3, 4))], ["m"],
                                    run_dir / "student", 60.0, [])
    monkeypatch.setattr(run_module, "run", lambda config, rep: summary)
    cli._run(RunConfig())
    assert (run_dir / "report.html").exists()

    def broken(path: Path) -> None:
        raise RuntimeError("figure bug")

    monkeypatch.setattr(report, "write_report", broken)
    with caplog.at_level("WARNING", logger="ioa"):
        cli._run(RunConfig())
    assert "report could not be written (figure bug)" in caplog.text

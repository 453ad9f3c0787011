"""`ioa report BENCH_DIR`: the report of a bench directory that a fake bench (tests/bench_fakes.py) really
wrote: every section, every figure a valid PNG, a self-contained page, numbers that match bench.json, a
one-seed bench, a damaged bench.json, and the command line (`ioa report`, and `ioa bench` writing it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bench_fakes import FakeTeacher, patch_models
from ioa import ui
from ioa.bench import TITLES, run_bench
from ioa.bench_report import FIGURE_NAMES, SECTIONS, findings, is_bench_dir
from ioa.cli import app
from ioa.errors import IoaError
from ioa.report import ReportFiles, md_esc, write_report
from test_bench import _bench_config
from test_report import assert_figures

METHODS = ["ioa", "undistilled", "standard", "no_adapter"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui.console, "width", 400)  # long tmp paths stay on one line


def make_bench(root: Path, monkeypatch: pytest.MonkeyPatch, seeds: int = 2) -> tuple[Path, dict[str, Any]]:
    """A bench directory written by the real `run_bench` on the fake models."""
    patch_models(monkeypatch)
    cfg = _bench_config(root, seeds=seeds, methods=METHODS)
    return cfg.bench_dir, run_bench(cfg, teacher=FakeTeacher())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], ReportFiles]:
    with pytest.MonkeyPatch.context() as mp:
        bench_dir, result = make_bench(tmp_path_factory.mktemp("bench"), mp)
    return bench_dir, result, write_report(bench_dir)


def _page(files: ReportFiles) -> tuple[str, str]:
    return files.html.read_text(encoding="utf-8"), files.markdown.read_text(encoding="utf-8")


def test_every_section_is_present(rendered: tuple[Path, dict[str, Any], ReportFiles]) -> None:
    bench_dir, _, files = rendered
    assert is_bench_dir(bench_dir)
    page, md = _page(files)
    assert files.html == bench_dir / "report.html" and files.markdown == bench_dir / "report.md"
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
        assert f'href="#{sid}"' in page, sid
        assert f"\n## {md_esc(title)}\n" in md, title
    assert page.count("<section") == page.count("</section>")
    for method in METHODS:
        assert f"<td>{TITLES[method]}</td>" in page


def test_every_figure_is_a_valid_png_saved_and_embedded(rendered: tuple[Path, dict[str, Any], ReportFiles]) -> None:
    bench_dir, _, files = rendered
    assert_figures(bench_dir, files, FIGURE_NAMES)


def test_page_is_self_contained(rendered: tuple[Path, dict[str, Any], ReportFiles]) -> None:
    page, _ = _page(rendered[2])
    assert not re.search(r'(src|href)="(?!data:|#)', page), "only inline data and in-page links"
    assert not re.search(r"(src|href)=\"?https?://", page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "default-src 'none'" in page


def test_numbers_match_bench_json(rendered: tuple[Path, dict[str, Any], ReportFiles]) -> None:
    bench_dir, result, files = rendered
    on_disk = json.loads((bench_dir / "bench.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(result["summary"]))
    page, md = _page(files)
    for method, s in on_disk["summary"].items():
        for name, b in s["benchmarks"].items():
            assert f"<td>{100 * b['mean']:.1f} ± {100 * b['std']:.1f}</td>" in page, (method, name)
            assert f"{100 * b['mean']:.1f} ± {100 * b['std']:.1f}" in md
            if b["retention"] is not None:
                assert f"<td>{b['retention']:.2f}</td>" in page
        assert f"<td>{s['teacher_tokens']:,.0f}</td>" in page, method
    for name, bm in on_disk["benchmarks"].items():
        assert f"{name} accuracy % (n={len(bm['items'])})" in page
    for method, per in on_disk["significance"].items():
        for name, sig in per.items():
            assert f"{TITLES[method]} on {name} ({100 * sig['delta']:+.1f} points, p = {sig['p_value']:.3f})" in page
    assert "IOA scores lower than" in page  # said either way, never left out


def test_findings_name_where_ioa_wins_and_loses() -> None:
    sig = {"standard": {"x": {"delta": 0.2, "p_value": 0.01}, "y": {"delta": -0.1, "p_value": 0.99}},
           "llm2llm": {"x": {"delta": 0.05, "p_value": 0.2}}}
    text = " ".join(findings({"significance": sig, "seeds": [0, 1, 2]}))
    assert "significantly better than standard distillation on x (+20.0 points, p = 0.010)" in text
    assert "lower than standard distillation on y (-10.0 points, p = 0.990), significantly" in text
    assert "Not significant (IOA ahead or level): LLM2LLM-style on x" in text


def test_one_seed_bench_renders_with_wilson_intervals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench_dir, result = make_bench(tmp_path, monkeypatch, seeds=1)
    assert all(b["std"] is None for s in result["summary"].values() for b in s["benchmarks"].values())
    files = write_report(bench_dir)
    page, _ = _page(files)
    assert_figures(bench_dir, files, FIGURE_NAMES)
    assert "95% Wilson interval (one seed)" in page
    mean = result["summary"]["ioa"]["benchmarks"]["arithmetic"]["mean"]
    assert f"<td>{100 * mean:.1f}</td>" in page
    assert "±" not in page.split('<section id="results">')[1].split("</table>")[0]


@pytest.mark.parametrize("damage", ["missing", "not json", "wrong shape"])
def test_a_missing_or_damaged_bench_json_is_one_line_with_a_fix(
    damage: str, rendered: tuple[Path, dict[str, Any], ReportFiles], tmp_path: Path
) -> None:
    bench_dir = tmp_path / "b"
    bench_dir.mkdir()
    (bench_dir / "bench.yaml").write_text((rendered[0] / "bench.yaml").read_text())
    if damage == "not json":
        (bench_dir / "bench.json").write_text('{"summary": {')
    elif damage == "wrong shape":
        on_disk = json.loads((rendered[0] / "bench.json").read_text())
        del on_disk["summary"]["standard"]["benchmarks"]["gsm8k"]
        (bench_dir / "bench.json").write_text(json.dumps(on_disk))
    with pytest.raises(IoaError) as info:
        write_report(bench_dir)
    assert "\n" not in str(info.value)
    assert "ioa bench" in info.value.fix and "--out" in info.value.fix
    result = runner.invoke(app, ["report", str(bench_dir)])
    assert result.exit_code != 0
    assert [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output


def test_ioa_report_command_on_a_bench(rendered: tuple[Path, dict[str, Any], ReportFiles]) -> None:
    result = runner.invoke(app, ["report", str(rendered[0])])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output and "tradeoff.png" in result.output
    assert "bench directory" in runner.invoke(app, ["report", "--help"]).output


def test_ioa_bench_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ioa.bench
    import ioa.report
    from ioa.models.cache import CachedModel

    patch_models(monkeypatch)
    monkeypatch.setattr(ioa.bench, "open_teacher", lambda config, run, cache: CachedModel(FakeTeacher(), cache))
    cfg = _bench_config(tmp_path, seeds=1, methods=["ioa", "undistilled"])
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = tmp_path / "benches" / "b1"
    result = runner.invoke(app, ["bench", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "figures" / "methods.png").exists()
    assert f"report: {out / 'report.html'}" in result.output

    def broken(path: Path) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(ioa.report, "write_report", broken)  # a report failure does not fail the bench
    result = runner.invoke(app, ["bench", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "the report could not be written (no fonts)" in caplog.text and f"`ioa report {out}`" in caplog.text

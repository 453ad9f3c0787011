"""`ioa report BENCH_DIR`: the report of an `ioa bench` directory, from its bench.json.

The same page as a run's report (ioa.report: Doc, the page shell, escaping, atomic writes) with a bench's
sections: the configuration, the method × benchmark table, per-module accuracy, the budget each method kept
to, forgetting, and the paired bootstrap of IOA against every other method in plain words. Figures
(ioa.figures) are embedded in report.html and saved as BENCH_DIR/figures/*.png.

    load_bench           bench.json, checked (a missing or damaged one is an IoaError naming the fix)
    build_bench_figures  PNG bytes per figure
    write_bench_report   report.html, report.md, figures/*.png into the bench directory
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ioa.bench import BUDGET_RULE, TITLES, _acc, _p, _pct
from ioa.errors import IoaError
from ioa.matching import BudgetCheck
from ioa.report import Doc, ReportFiles, page, write_files
from ioa.rundir import read_json
from ioa.stats import Proportion

SECTIONS = (
    ("summary", "Summary"),
    ("config", "Configuration"),
    ("results", "Methods × benchmarks"),
    ("modules", "Per-module accuracy"),
    ("budget", "Budget: samples, teacher tokens and wall time"),
    ("forgetting", "Forgetting"),
    ("significance", "IOA against each method"),
)
FIGURE_NAMES = frozenset({"methods", "modules", "tokens", "tradeoff"})
ALPHA = 0.05
FLAGGED = {"token_limited": "token-limited (!)", "under_used": "under-used (!)"}  # fell short of N

Bench = dict[str, Any]  # bench.json's content
Figures = Mapping[str, tuple[bytes, str]]  # name → (PNG bytes, caption)


def is_bench_dir(path: Path) -> bool:
    """A bench directory has bench.yaml at its root (bench.json once the bench has finished)."""
    return (path / "bench.yaml").is_file()


def _check(result: Any) -> None:
    """Touch every field the report reads, so that a damaged file fails here and not halfway through."""
    if not isinstance(result, dict):
        raise ValueError("not a JSON object")
    names = list(result["benchmarks"])
    for method, s in result["summary"].items():
        for n in names:
            b = s["benchmarks"][n]
            float(b["mean"]), s["modules"][n].items()
        float(s["samples"]), float(s["teacher_tokens"]), float(s["seconds"]), list(s["budget_status"])
        TITLES.get(method)
    for c in result["cells"]:
        BudgetCheck.from_dict(c["budget"]), c["spend"]["teacher_tokens"], float(c["seconds"])
        for n in names:
            list(c["results"][n]["correct"]), float(c["results"][n]["accuracy"])
    for n in names:
        list(result["teacher"][n]["correct"]), result["teacher"][n]["modules"].items()
    for per in result["significance"].values():
        for n, sig in per.items():
            float(sig["delta"]), float(sig["p_value"]), result["benchmarks"][n]
    result["config"]["run"]["teacher"]["spec"], result["config"]["bootstrap"]["resamples"]
    list(result["methods"]), list(result["seeds"])


def load_bench(path: Path) -> Bench:
    """bench.json of a bench directory; IoaError (one line, with the fix) when it is missing or damaged."""
    file = path / "bench.json"
    resume = f"`ioa bench {path / 'bench.yaml'} --out {path}`"
    if not file.exists():
        raise IoaError(f"{path} has no bench.json (the bench has not finished)",
                       f"finish it with {resume}: finished cells are skipped")
    try:
        result = read_json(file)
        _check(result)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise IoaError(f"{file} cannot be read ({reason})", f"rewrite it with {resume}") from None
    return result


# ------------------------------------------------------------------------------------------ derived data


def _title(method: str) -> str:
    return TITLES.get(method, method)


def _cells(result: Bench) -> dict[tuple[str, int], dict[str, Any]]:
    return {(c["method"], c["seed"]): c for c in result["cells"]}


def _proportion(correct: list[int]) -> Proportion:
    return Proportion(sum(correct), len(correct))


def _interval(result: Bench, method: str, name: str) -> tuple[float, list[float]]:
    """A method's accuracy on a benchmark and its [low, high] error: ± the std over seeds, or the 95% Wilson
    interval of its one seed's items."""
    b = result["summary"][method]["benchmarks"][name]
    mean, std = float(b["mean"]), b["std"]
    if std is not None:
        return mean, [min(mean, std), std]
    seed = result["summary"][method]["seeds"][0]
    lo, hi = _proportion(_cells(result)[(method, seed)]["results"][name]["correct"]).interval
    return mean, [max(0.0, mean - lo), max(0.0, hi - mean)]


def findings(result: Bench) -> list[str]:
    """The paired bootstrap in plain sentences: where IOA is significantly better at ALPHA, where the
    difference is not significant, and every benchmark where IOA scores lower."""
    better, unclear, worse = [], [], []
    for method, per in result["significance"].items():
        for name, sig in per.items():
            delta, p = float(sig["delta"]), float(sig["p_value"])
            text = f"{_title(method)} on {name} ({100 * delta:+.1f} points, p = {p:.3f})"
            if p < ALPHA:
                better.append(text)
            elif delta < 0:
                worse.append(text + (", significantly (the reverse test's p < 0.05)" if 1 - p < ALPHA else ""))
            else:
                unclear.append(text)
    n_seeds = len(result["seeds"])
    out = [f"Paired bootstrap over items, {n_seeds} seed{'s' if n_seeds != 1 else ''}; one-sided, H1: IOA better; "
           f"significant at {ALPHA}."]
    if not result["significance"]:
        return [*out, "No other method has finished a seed that IOA finished: nothing to compare."]
    out.append("IOA is significantly better than " + "; ".join(better) + "." if better
               else "IOA is significantly better than no method on any benchmark.")
    if unclear:
        out.append("Not significant (IOA ahead or level): " + "; ".join(unclear) + ".")
    out.append("IOA scores lower than " + "; ".join(worse) + "." if worse
               else "IOA scores lower than no method on any benchmark.")
    return out


# --------------------------------------------------------------------------------------------- figures


def build_bench_figures(result: Bench) -> dict[str, tuple[bytes, str]]:
    """name → (PNG bytes, caption)."""
    from ioa import figures

    names, summary, teacher = list(result["benchmarks"]), result["summary"], result["teacher"]
    one_seed = all(b["std"] is None for s in summary.values() for b in s["benchmarks"].values())
    out: dict[str, tuple[bytes, str]] = {}
    series = []
    for method in summary:
        points = [_interval(result, method, n) for n in names]
        series.append((_title(method), [m for m, _ in points], [[e[0] for _, e in points], [e[1] for _, e in points]]))
    t_points = [(_proportion(teacher[n]["correct"]).value, _proportion(teacher[n]["correct"]).interval) for n in names]
    series.append(("teacher", [v for v, _ in t_points], [[max(0.0, v - lo) for v, (lo, _) in t_points],
                                                         [max(0.0, hi - v) for v, (_, hi) in t_points]]))
    error = "95% Wilson interval (one seed)" if one_seed else "± std over seeds (Wilson interval for one seed)"
    out["methods"] = (figures.grouped_bars(names, series, f"accuracy ({error})", "Accuracy per method and benchmark"),
                      f"Accuracy of every method on every benchmark, mean over seeds; error bars: {error}; the "
                      "teacher's bar with its 95% Wilson interval.")
    panels = []
    for n in names:
        modules = sorted({m for s in summary.values() for m in s["modules"][n]})
        if modules:
            panels.append((n, modules, [*((_title(m), s["modules"][n]) for m, s in summary.items()),
                                        ("teacher", _acc(teacher[n]["modules"]))]))
    if panels:
        out["modules"] = (figures.method_curves(panels),
                          "Per-method curves: accuracy per module (mean over seeds), one line per method, one "
                          "panel per benchmark; the teacher dashed.")
    out["tokens"] = (figures.labelled_hbars([(_title(m), float(s["teacher_tokens"])) for m, s in summary.items()],
                                            "{:,.0f}", "teacher tokens (prompt + completion, mean over seeds)",
                                            "Teacher tokens per method"),
                     "Teacher tokens each method spent, mean over seeds; IOA's set every seed's budget.")
    first = names[0]
    points = [(_title(c["method"]), float(c["spend"]["teacher_tokens"]), float(c["results"][first]["accuracy"]))
              for c in result["cells"]]
    out["tradeoff"] = (figures.accuracy_vs_tokens(points, first),
                       f"Accuracy on {first} against the teacher tokens spent, one point per method and seed.")
    return out


# ------------------------------------------------------------------------------------------- rendering


def _summary(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("summary", "Summary")
    names = list(result["benchmarks"])
    counts = {m: len(s["seeds"]) for m, s in result["summary"].items()}
    for method, k in counts.items():
        if k < len(result["seeds"]):
            doc.p(f"{_title(method)} finished {k} of {len(result['seeds'])} seeds: its numbers cover those only.",
                  "warn")
    teacher = result["teacher"]
    doc.kv([
        ("bench", result["name"]),
        ("methods", ", ".join(_title(m) for m in result["methods"])),
        ("seeds", ", ".join(map(str, result["seeds"]))),
        ("benchmarks", ", ".join(f"{n} ({len(result['benchmarks'][n]['items'])} items)" for n in names)),
        ("teacher accuracy", ", ".join(f"{n} {100 * _proportion(teacher[n]['correct']).value:.1f}%" for n in names)),
        ("cells", len(result["cells"])),
    ])
    for line in findings(result):
        doc.p(line)


def _config(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("config", "Configuration")
    cfg, run = result["config"], result["config"]["run"]
    doc.kv([
        ("teacher", run["teacher"]["spec"]),
        ("student", run["student"]["spec"]),
        ("domain", f"{run['domain']['name']} ({', '.join(run['domain'].get('modules') or []) or 'all modules'})"),
        ("methods", ", ".join(result["methods"])),
        ("seeds", len(result["seeds"])),
        ("budget tolerance", cfg.get("budget", {}).get("tolerance", "–")),
        ("on shortfall", cfg.get("budget", {}).get("on_shortfall", "–")),
        ("bootstrap", f"{cfg['bootstrap']['resamples']} resamples, seed {cfg['bootstrap'].get('seed', '–')}"),
        ("held-out draw seed", cfg.get("benchmarks", {}).get("seed", "–")),
    ])
    doc.h3("Budget rule")
    doc.p(result.get("budget_rule") or BUDGET_RULE)


def _results(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("results", "Methods × benchmarks")
    names, teacher = list(result["benchmarks"]), result["teacher"]
    head = ["method", "seeds"]
    for n in names:
        head += [f"{n} accuracy % (n={len(result['benchmarks'][n]['items'])})", f"{n} retention"]
    rows = []
    for method, s in result["summary"].items():
        row = [_title(method), len(s["seeds"])]
        for n in names:
            b = s["benchmarks"][n]
            row += [_pct(b["mean"], b["std"]), "–" if b["retention"] is None else f"{b['retention']:.2f}"]
        rows.append(row)
    rows.append(["teacher", "–", *(x for n in names for x in (_pct(_proportion(teacher[n]["correct"]).value, None),
                                                              "1.00"))])
    doc.table(head, rows)
    doc.p("Accuracy in % as mean ± std over seeds (no std with one seed); retention = student / teacher accuracy "
          "on the same items.", "muted")
    if "methods" in figs:
        doc.figure("methods", *figs["methods"])


def _modules(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("modules", "Per-module accuracy")
    summary, teacher = result["summary"], result["teacher"]
    for n in result["benchmarks"]:
        modules = sorted({m for s in summary.values() for m in s["modules"][n]})
        if not modules:
            continue
        doc.h3(f"{n} (%, mean over seeds)")
        t_acc = _acc(teacher[n]["modules"])
        rows = [[_title(m), *(f"{100 * s['modules'][n].get(x, 0.0):.1f}" for x in modules)]
                for m, s in summary.items()]
        rows.append(["teacher", *(f"{100 * t_acc.get(x, 0.0):.1f}" for x in modules)])
        doc.table(["method", *modules], rows)
    if "modules" in figs:
        doc.figure("modules", *figs["modules"])


def _budget(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("budget", "Budget: samples, teacher tokens and wall time")
    budgets = [b for b in result["budgets"].values()]
    n_mean = sum(b["samples"] for b in budgets) / len(budgets) if budgets else None
    rows = []
    for method, s in result["summary"].items():
        marks = ", ".join(FLAGGED.get(x, x.replace("_", "-")) for x in s["budget_status"])
        rows.append([_title(method), f"{s['samples']:.0f}", "–" if n_mean is None else f"{n_mean:.0f}",
                     f"{s['teacher_tokens']:,.0f}", "–" if s["token_ratio"] is None else f"{s['token_ratio']:.2f}",
                     marks, f"{s['seconds'] / 60:.1f}", f"{s.get('seconds_total', 0.0) / 60:.1f}"])
    doc.table(["method", "samples", "N (IOA)", "teacher tokens", "tokens / T", "budget", "minutes / seed",
               "minutes in all"], rows)
    flagged = [_title(m) for m, s in result["summary"].items() if set(s["budget_status"]) & FLAGGED.keys()]
    if flagged:
        doc.p("Fell short of N samples (token-limited: spent T first; under-used: stopped with tokens left): "
              + ", ".join(flagged) + ". Their accuracy is on less data than IOA's.", "warn")
    doc.h3("Per seed")
    rows = []
    for c in result["cells"]:
        b = BudgetCheck.from_dict(c["budget"])
        rows.append([c["seed"], _title(c["method"]), b.samples, b.budget_samples, f"{b.teacher_tokens:,}",
                     f"{b.budget_tokens:,}", "–" if b.token_ratio is None else f"{b.token_ratio:.2f}",
                     FLAGGED.get(b.status, b.status.replace("_", "-")), c.get("teacher_calls_paid", "–"),
                     f"{float(c['seconds']) / 60:.1f}"])
    doc.table(["seed", "method", "samples", "N", "teacher tokens", "T", "tokens / T", "status", "teacher calls paid",
               "minutes"], rows)
    doc.p(result.get("budget_rule") or BUDGET_RULE, "muted")
    for name in ("tokens", "tradeoff"):
        if name in figs:
            doc.figure(name, *figs[name])


def _forgetting(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("forgetting", "Forgetting")
    first = next(iter(result["benchmarks"]))
    tau = result["config"]["run"].get("organizer", {}).get("tau_mastery", "τ_mastery")
    rows = [[_title(m), "–" if s.get("forgetting") is None else f"{100 * s['forgetting']:.1f}",
             "–" if s.get("largest_drop") is None else f"{100 * s['largest_drop']:.1f}"]
            for m, s in result["summary"].items()]
    doc.table(["method", "forgetting (points)", "largest drop (points)"], rows)
    doc.p(f"On {first}, base student → method, mean over seeds. Forgetting: the largest drop on a module the base "
          f"student had mastered (accuracy / teacher ≥ {tau}); – when it had mastered none. Largest drop: the same "
          "over every module.", "muted")


def _significance(doc: Doc, result: Bench, figs: Figures) -> None:
    doc.section("significance", "IOA against each method")
    resamples = result["config"]["bootstrap"]["resamples"]
    rows = []
    for method, per in result["significance"].items():
        for name, sig in per.items():
            p = float(sig["p_value"])
            verdict = "IOA better" if p < ALPHA else "IOA worse" if 1 - p < ALPHA else "not significant"
            rows.append([_title(method), name, f"{100 * float(sig['delta']):+.1f}", _p(p, resamples),
                         sig.get("n_items", "–"), sig.get("n_seeds", "–"), verdict])
    doc.table(["method", "benchmark", "IOA − method (points)", "p (H1: IOA better)", "items", "seeds",
               f"at {ALPHA}"], rows)
    for line in findings(result):
        doc.p(line)
    doc.p(f"Paired bootstrap over items: each item's IOA − method difference averaged over the seeds both ran, "
          f"{resamples} resamples; p = share of resamples in which IOA is not better (ties count half).", "muted")


def render_bench(path: Path, result: Bench, figs: Figures) -> tuple[str, str]:
    """(HTML, Markdown) of the bench report."""
    doc = Doc()
    for section in (_summary, _config, _results, _modules, _budget, _forgetting, _significance):
        section(doc, result, figs)
    return page(f"ioa bench report: {result['name']}", path, SECTIONS, doc)


def write_bench_report(path: Path) -> ReportFiles:
    """Render the report of a bench directory into it: report.html, report.md and figures/*.png."""
    t0 = time.perf_counter()
    path = Path(path)
    result = load_bench(path)
    figs = build_bench_figures(result)
    html_page, md = render_bench(path, result, figs)
    return write_files(path, html_page, md, figs, FIGURE_NAMES, t0)

"""The report's figures (matplotlib, Agg backend). Each function takes plain data and returns PNG bytes.

Nothing here reads a run directory: `ioa.report` loads the run and calls these. Labels are module names
and stage numbers only (never model-written text), and math-text parsing is off, so a `$` in a module
name is drawn as a dollar sign, not interpreted.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: the report renders on headless machines

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ioa.stats import Proportion

DPI = 110
_RC = {
    "text.parse_math": False,  # module names are data: '$' must not start math text
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
TEACHER_COLOUR = "#4c72b0"
BEFORE_COLOUR = "#c7c7c7"
AFTER_COLOUR = "#dd8452"
TARGET_COLOUR = "#c44e52"
SOURCE_STYLE = {  # edge source → (colour, line style)
    "declared": ("#555555", "solid"),
    "proposed": ("#4c72b0", "dashed"),
    "measured": ("#dd8452", "solid"),
}
DROP_COLOURS = {
    "invalid_json": "#8172b3",
    "no_json": "#937860",
    "schema": "#da8bc3",
    "wrong_answer": "#c44e52",
    "near_duplicate": "#ccb974",
    "contaminated": "#64b5cd",
}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _errors(ps: Sequence[Proportion | None]) -> tuple[list[float], list[list[float]]]:
    """Bar heights and asymmetric Wilson error bars (zero-height bars for unmeasured modules)."""
    values, low, high = [], [], []
    for p in ps:
        if p is None or p.n == 0:
            values.append(0.0)
            low.append(0.0)
            high.append(0.0)
            continue
        lo, hi = p.interval
        values.append(p.value)
        low.append(max(0.0, p.value - lo))
        high.append(max(0.0, hi - p.value))
    return values, [low, high]


def accuracy_bars(
    modules: Sequence[str],
    series: Sequence[tuple[str, Mapping[str, Proportion]]],
    targets: Sequence[str] = (),
) -> bytes:
    """Grouped bars per module (e.g. P_T, P_S before, P_S after) with 95% Wilson intervals.
    Target modules get a red tick label."""
    bars = [(label, *_errors([acc.get(m) for m in modules])) for label, acc in series]
    return grouped_bars(modules, bars, "accuracy (95% Wilson interval)",
                        "Teacher vs student per module (red labels: targets)", targets)


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], Sequence[Sequence[float]]]],
    ylabel: str,
    title: str,
    highlight: Sequence[str] = (),
) -> bytes:
    """Grouped bars: per group one bar per series (label, heights, [low errors, high errors]), accuracy
    scale; highlighted groups get a red tick label."""
    colours = [TEACHER_COLOUR, BEFORE_COLOUR, AFTER_COLOUR, "#55a868", "#8172b3", "#937860", "#da8bc3", "#ccb974",
               "#64b5cd"]
    with plt.rc_context(_RC):
        width = max(6.0, 0.55 * len(groups) * max(1, len(series)) / 2 + 2)
        fig, ax = plt.subplots(figsize=(min(width, 18.0), 4.2))
        k = max(1, len(series))
        bar_w = 0.8 / k
        xs = list(range(len(groups)))
        for i, (label, values, err) in enumerate(series):
            offs = [x - 0.4 + bar_w * (i + 0.5) for x in xs]
            ax.bar(offs, values, bar_w, yerr=[list(e) for e in err], capsize=2, label=label,
                   color=colours[i % len(colours)], edgecolor="#333333", linewidth=0.4,
                   error_kw={"elinewidth": 0.8, "ecolor": "#222222"})
        ax.set_xticks(xs)
        tilt = len(groups) > 4  # long names would overlap side by side
        ax.set_xticklabels(groups, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        for tick, g in zip(ax.get_xticklabels(), groups, strict=True):
            if g in highlight:
                tick.set_color(TARGET_COLOUR)
                tick.set_fontweight("bold")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _png(fig)


def prerequisite_graph(
    nodes: Sequence[str],
    edges: Sequence[Mapping[str, Any]],
    layers: Mapping[str, int],
    layer_names: Mapping[int, str],
    targets: Sequence[str] = (),
) -> bytes:
    """The prerequisite graph with one column per layer (stage), targets highlighted, edges styled by
    their source (declared / proposed / measured; measured edges labelled with their Dep strength).
    An edge with `current: False` (no longer in the latest graph) is drawn faint."""
    import networkx as nx

    graph = nx.DiGraph()
    for n in nodes:
        graph.add_node(n, layer=layers.get(n, 0))
    drawn = [e for e in edges if e["prereq"] in graph and e["module"] in graph]
    graph.add_edges_from((e["prereq"], e["module"]) for e in drawn)
    pos = nx.multipartite_layout(graph, subset_key="layer", align="vertical") if nodes else {}
    column_size = Counter(layers.get(n, 0) for n in nodes)
    columns = sorted(column_size)
    with plt.rc_context({**_RC, "axes.grid": False}):
        height = max(2.8, 0.9 * max(column_size.values(), default=1) + 1.6)
        width = max(6.0, 2.6 * len(column_size) + 1)
        fig, ax = plt.subplots(figsize=(min(width, 18.0), min(height, 14.0)))
        ax.axis("off")
        if pos:
            xs_all, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
            span_x, span_y = (max(xs_all) - min(xs_all)) or 1.0, (max(ys) - min(ys)) or 1.0
            top = max(ys) + 0.12 * span_y
            ax.set_xlim(min(xs_all) - 0.2 * span_x, max(xs_all) + 0.2 * span_x)
            ax.set_ylim(min(ys) - 0.15 * span_y, top + 0.12 * span_y)
            for layer in sorted(column_size):
                xs = [pos[n][0] for n in nodes if layers.get(n, 0) == layer]
                ax.text(sum(xs) / len(xs), top, layer_names.get(layer, f"layer {layer}"), ha="center",
                        va="bottom", fontsize=9, fontweight="bold", color="#444444")
        boxes = {}
        for n in nodes:
            x, y = pos[n]
            target = n in targets
            boxes[n] = ax.text(x, y, n, ha="center", va="center", fontsize=8, zorder=3,
                               fontweight="bold" if target else "normal", color="white" if target else "#222222",
                               bbox={"boxstyle": "round,pad=0.35", "fc": TARGET_COLOUR if target else "#eeeeee",
                                     "ec": "#7a1f22" if target else "#999999", "lw": 1.2})
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        to_points = 72.0 / fig.dpi

        def margin(node: str, dx: float, dy: float) -> float:
            """Points from a node's centre to its box edge along (dx, dy): arrows end on the box, not under it."""
            # The text's own extent plus the box padding (0.35 em): the bbox patch is sized only at draw time.
            extent = boxes[node].get_window_extent(renderer)
            pad = 0.35 * 8 / to_points + 3
            half_w, half_h = extent.width / 2 + pad, extent.height / 2 + pad
            return min(half_w / abs(dx) if dx else math.inf, half_h / abs(dy) if dy else math.inf) * to_points

        for e in drawn:
            u, v = e["prereq"], e["module"]
            colour, style = SOURCE_STYLE.get(str(e.get("source")), ("#999999", "dotted"))
            (x1, y1), (x2, y2) = ax.transData.transform(pos[u]), ax.transData.transform(pos[v])
            length = math.hypot(x2 - x1, y2 - y1) or 1.0
            dx, dy = (x2 - x1) / length, (y2 - y1) / length
            # Curved more the more columns it spans (or within one column), so it passes the nodes between.
            span = abs(columns.index(layers.get(u, 0)) - columns.index(layers.get(v, 0)))
            rad = 0.35 if span == 0 else 0.08 + 0.1 * (span - 1)
            nx.draw_networkx_edges(graph, pos, edgelist=[(u, v)], ax=ax, edge_color=colour, style=style,
                                   alpha=1.0 if e.get("current", True) else 0.3,
                                   arrows=True, arrowsize=14, width=1.4, connectionstyle=f"arc3,rad={rad}",
                                   min_source_margin=margin(u, dx, dy), min_target_margin=margin(v, dx, dy))
            if e.get("strength") is not None:
                (a1, b1), (a2, b2) = pos[u], pos[v]
                ax.text((a1 + a2) / 2, (b1 + b2) / 2, f"{float(e['strength']):.2f}", fontsize=7, color=colour,
                        ha="center", va="center", zorder=2,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"})
        handles = [Line2D([0], [0], color=c, linestyle=s, lw=1.6, label=f"{name} edge")
                   for name, (c, s) in SOURCE_STYLE.items()]
        handles.append(Patch(facecolor=TARGET_COLOUR, edgecolor="#7a1f22", label="target module"))
        handles.append(Patch(facecolor="#eeeeee", edgecolor="#999999", label="other module"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        ax.set_title("Prerequisite graph (columns: curriculum stages; arrows: prerequisite → module)")
        return _png(fig)


@dataclass(frozen=True)
class Measurement:
    """One point on the mastery time line: a label and P_S/P_T per module measured there."""

    label: str
    kind: str  # snapshot | gate | final
    ratios: Mapping[str, float]
    passed: Mapping[str, bool] | None = None  # gate: per module, passed or failed


def mastery_trajectory(
    modules: Sequence[str], timeline: Sequence[Measurement], tau_mastery: float, targets: Sequence[str] = ()
) -> bytes:
    """P_S/P_T per module over the run's measurements, with the mastery gate line τ_mastery."""
    markers = {"snapshot": "o", "gate": "s", "final": "*"}
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(min(max(6.5, 0.9 * len(timeline) + 3), 18.0), 4.6))
        cmap = plt.get_cmap("tab20" if len(modules) > 10 else "tab10")
        top = 1.1
        for i, m in enumerate(modules):
            pts = [(x, t.ratios[m], t) for x, t in enumerate(timeline) if m in t.ratios]
            if not pts:
                continue
            colour = cmap(i % cmap.N)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, lw=2.0 if m in targets else 1.0,
                    alpha=1.0 if m in targets else 0.6, label=m + (" (target)" if m in targets else ""))
            groups: dict[tuple[str, bool], list[tuple[int, float]]] = {}
            for x, r, t in pts:  # one artist per marker style, not one per point (20 modules × many points)
                filled = t.passed is None or t.passed.get(m, True)
                groups.setdefault((t.kind, filled), []).append((x, r))
                top = max(top, r + 0.05)
            for (kind, filled), xy in groups.items():
                ax.plot([p[0] for p in xy], [p[1] for p in xy], ls="none", marker=markers.get(kind, "o"),
                        ms=8 if kind == "final" else 5, color=colour, markerfacecolor=colour if filled else "white",
                        markeredgewidth=1.2)
        ax.axhline(tau_mastery, color="#c44e52", ls="--", lw=1.2)
        ax.text(len(timeline) - 0.5 if timeline else 0, tau_mastery, f" gate τ_mastery = {tau_mastery:g}",
                color="#c44e52", va="bottom", ha="right", fontsize=8)
        ax.set_xticks(range(len(timeline)))
        ax.set_xticklabels([t.label for t in timeline], rotation=30 if len(timeline) > 4 else 0,
                           ha="right" if len(timeline) > 4 else "center")
        ax.set_xlim(-0.5, max(0.5, len(timeline) - 0.5))
        ax.set_ylim(-0.03, min(top, 3.0))  # a ratio of 0 stays visible
        ax.set_ylabel("P_S / P_T (mastery ratio)")
        ax.set_title("Mastery trajectory (○ snapshot, □ gate: hollow = failed, ★ final held-out)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        return _png(fig)


def data_funnel(rows: Sequence[tuple[str, int, Mapping[str, int]]]) -> bytes:
    """Per data file: kept samples and each drop reason, as stacked horizontal bars of teacher replies."""
    reasons = sorted({r for _, _, drops in rows for r in drops})
    with plt.rc_context({**_RC, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(9.5, max(2.6, 0.38 * len(rows) + 1.4)))
        labels = [label for label, _, _ in rows]
        ys = list(range(len(rows)))[::-1]
        left = [0.0] * len(rows)
        kept = [float(k) for _, k, _ in rows]
        ax.barh(ys, kept, color="#55a868", label="kept (trained on)", edgecolor="white")
        left = kept[:]
        for reason in reasons:
            vals = [float(drops.get(reason, 0)) for _, _, drops in rows]
            ax.barh(ys, vals, left=left, color=DROP_COLOURS.get(reason, "#999999"), label=f"dropped: {reason}",
                    edgecolor="white")
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.set_yticks(ys)
        ax.set_yticklabels(labels)
        ax.set_xlabel("teacher replies (retries included)")
        ax.set_title("Synthetic data: what happened to each teacher reply")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        return _png(fig)


def training_loss(curves: Sequence[tuple[str, Sequence[float]]]) -> bytes:
    """Training loss per logged step, one line per fine-tuning run; when no run logged more than one step
    (tiny data sets), the last loss per run as bars instead, since single points make no curve."""
    with plt.rc_context(_RC):
        cmap = plt.get_cmap("tab10")
        if max((len(losses) for _, losses in curves), default=0) <= 1:
            fig, ax = plt.subplots(figsize=(8.5, max(2.4, 0.34 * len(curves) + 1.2)))
            ys = list(range(len(curves)))[::-1]
            values = [float(losses[-1]) if losses else 0.0 for _, losses in curves]
            ax.barh(ys, values, color=[cmap(i % 10) for i in range(len(curves))])
            for y, v in zip(ys, values, strict=True):
                ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
            ax.set_yticks(ys)
            ax.set_yticklabels([label for label, _ in curves])
            ax.set_xlim(0, max(values, default=1.0) * 1.2 or 1.0)
            ax.set_xlabel("training loss (one logged step per training)")
            ax.set_title("Student fine-tuning loss")
            return _png(fig)
        fig, ax = plt.subplots(figsize=(8.5, 3.6))
        for i, (label, losses) in enumerate(curves):
            xs = list(range(1, len(losses) + 1))
            ax.plot(xs, losses, marker="o" if len(losses) < 30 else None, ms=3, lw=1.4, color=cmap(i % 10),
                    label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("logged step")
        ax.set_ylabel("training loss")
        ax.set_title("Student fine-tuning loss")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        return _png(fig)


def phase_times(phases: Sequence[tuple[str, float]]) -> bytes:
    """Wall time per phase (minutes), as horizontal bars."""
    return labelled_hbars([(p, s / 60) for p, s in phases], "{:.1f} min",
                          "wall time (minutes, from event timestamps)", "Where the time went")


def labelled_hbars(rows: Sequence[tuple[str, float]], fmt: str, xlabel: str, title: str,
                   colour: str = TEACHER_COLOUR) -> bytes:
    """One horizontal bar per (label, value), top to bottom, each with its value written by `fmt`."""
    with plt.rc_context({**_RC, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(8.5, max(2.4, 0.34 * len(rows) + 1.2)))
        ys = list(range(len(rows)))[::-1]
        values = [v for _, v in rows]
        ax.barh(ys, values, color=colour)
        for y, v in zip(ys, values, strict=True):
            ax.text(v, y, " " + fmt.format(v), va="center", fontsize=8)
        ax.set_yticks(ys)
        ax.set_yticklabels([label for label, _ in rows])
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, max(values, default=1) * 1.25 or 1)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(title)
        return _png(fig)


def method_curves(
    panels: Sequence[tuple[str, Sequence[str], Sequence[tuple[str, Mapping[str, float]]]]],
) -> bytes:
    """Per-module accuracy, one line per method across the modules, one panel per benchmark
    (title, modules, [(method, module → accuracy)]); a series named "teacher" is drawn dashed."""
    with plt.rc_context(_RC):
        k = max(1, len(panels))
        longest = max((len(mods) for _, mods, _ in panels), default=1)
        fig, axes = plt.subplots(1, k, figsize=(min(18.0, max(6.5, k * (0.6 * longest + 3))), 4.4), squeeze=False)
        cmap = plt.get_cmap("tab10")
        for ax, (title, modules, series) in zip(axes[0], panels, strict=True):
            xs = list(range(len(modules)))
            for i, (label, acc) in enumerate(series):
                pts = [(x, acc[m]) for x, m in zip(xs, modules, strict=True) if m in acc]
                teacher = label == "teacher"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, lw=1.6 if teacher else 1.2,
                        ls="--" if teacher else "-", color="#222222" if teacher else cmap(i % 10), label=label)
            ax.set_xticks(xs)
            tilt = len(modules) > 3
            ax.set_xticklabels(modules, rotation=30 if tilt else 0, ha="right" if tilt else "center")
            ax.set_xlim(-0.5, max(0.5, len(modules) - 0.5))
            ax.set_ylim(-0.03, 1.05)
            ax.set_title(title)
        axes[0][0].set_ylabel("accuracy (mean over seeds)")
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        return _png(fig)


def accuracy_vs_tokens(points: Sequence[tuple[str, float, float]], benchmark: str) -> bytes:
    """Accuracy against teacher tokens spent, one point per (method, tokens, accuracy) — a method × seed."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(8.0, 4.2))
        cmap = plt.get_cmap("tab10")
        methods = list(dict.fromkeys(m for m, _, _ in points))
        for i, method in enumerate(methods):
            mine = [(t, a) for m, t, a in points if m == method]
            ax.plot([t for t, _ in mine], [a for _, a in mine], ls="none", marker="os^vDP*Xh"[i % 9], ms=7,
                    color=cmap(i % 10), alpha=0.85, label=method)
        ax.set_xlabel("teacher tokens spent (prompt + completion)")
        ax.set_ylabel(f"accuracy on {benchmark}")
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(f"Accuracy vs teacher tokens ({benchmark}; one point per method and seed)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        return _png(fig)

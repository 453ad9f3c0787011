"""Terminal presentation: progress bars and tables with rich. Logic never imports this module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ioa.identifier import ModuleScore

console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields a factory: `bar(description, total)` returns an `advance(n)` callback."""
    with _progress() as progress:
        yield RichReporter(progress).bar


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def scores_table(scores: list[ModuleScore], title: str = "Diagnosis") -> Table:
    table = Table(title=title)
    for name, justify in (("module", "left"), ("P_T", "right"), ("P_S [95% CI]", "right"), ("n", "right"),
                          ("Δ", "right"), ("deficient", "center"), ("severity", "right"), ("target", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in scores:
        lo, hi = s.student.interval
        teacher = _pct(s.teacher.value) + (" (cannot teach)" if s.teacher_cannot_teach else "")
        table.add_row(
            s.module,
            teacher,
            f"{_pct(s.student.value)} [{_pct(lo)}, {_pct(hi)}]",
            str(s.student.n),
            f"{s.gap:.2f}",
            "yes" if s.deficient else "",
            f"{s.severity:.2f}",
            (s.reason or "yes") if s.target else "",
        )
    return table


class RichReporter:
    """The loop's Reporter on a rich console: one progress bar per phase, messages above them."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def bar(self, description: str, total: int) -> Callable[[int], None]:
        task = self.progress.add_task(description, total=max(total, 1))
        return lambda n: self.progress.advance(task, n)

    def info(self, message: str) -> None:
        self.progress.console.print(f"[cyan]•[/] {message}", highlight=False)


@contextmanager
def reporter() -> Iterator[RichReporter]:
    with _progress() as progress:
        yield RichReporter(progress)


def comparison_table(comparisons: list, targets: list[str], title: str) -> Table:  # list[Comparison]
    table = Table(title=title)
    for name in ("module", "target", "before [95% CI]", "after [95% CI]", "Δ [95% CI]", "n"):
        table.add_column(name, justify="left" if name in ("module", "target") else "right")
    for c in comparisons:
        b_lo, b_hi = c.before.interval
        a_lo, a_hi = c.after.interval
        d_lo, d_hi = c.delta_interval
        table.add_row(
            c.module,
            "yes" if c.module in targets or c.module.startswith("targeted") else "",
            f"{_pct(c.before.value)} [{_pct(b_lo)}, {_pct(b_hi)}]",
            f"{_pct(c.after.value)} [{_pct(a_lo)}, {_pct(a_hi)}]",
            f"{100 * c.delta:+5.1f} [{100 * d_lo:+.1f}, {100 * d_hi:+.1f}]",
            str(c.after.n),
        )
    return table

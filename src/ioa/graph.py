"""The prerequisite graph G: edges with their source and strength, kept acyclic (DESIGN §2.4)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

EdgeSource = Literal["declared", "proposed", "measured"]

# How far each source is trusted when sources disagree: a domain's declaration beats the teacher's proposal,
# which beats a correlation measured on a handful of snapshots.
SOURCE_TRUST: dict[str, int] = {"declared": 3, "proposed": 2, "measured": 1}


@dataclass(frozen=True)
class Edge:
    """`prereq` must be learned before `module`. `strength` is Dep(prereq→module) when measured."""

    prereq: str
    module: str
    source: EdgeSource
    strength: float | None = None


def prerequisites(edges: Iterable[Edge], module: str) -> set[str]:
    return {e.prereq for e in edges if e.module == module}


def dependents(edges: Iterable[Edge], module: str) -> set[str]:
    return {e.module for e in edges if e.prereq == module}


def ancestors(edges: Iterable[Edge], module: str) -> set[str]:
    """Every direct or transitive prerequisite of a module."""
    edges = list(edges)
    seen: set[str] = set()
    stack = [module]
    while stack:
        for p in prerequisites(edges, stack.pop()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _edge_weight(edge: Edge) -> float:
    """Declared edges are the most trusted, then proposed, then measured by strength."""
    # Strength (Dep ≤ 1) only orders edges within a source: /10 keeps it below one trust step.
    return SOURCE_TRUST[edge.source] + (edge.strength or 0.0) / 10


def find_cycle(nodes: Iterable[str], edges: Iterable[Edge]) -> list[Edge] | None:
    """The edges of one directed cycle, or None if the graph is acyclic."""
    edges = list(edges)
    out: dict[str, list[Edge]] = {}
    for e in edges:
        out.setdefault(e.prereq, []).append(e)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for e in out.get(node, []):
            if state.get(e.module) == 1:
                start = next((i for i, p in enumerate(path) if p.prereq == e.module), len(path))
                return [*path[start:], e]
            if state.get(e.module) is None:
                path.append(e)
                if cycle := visit(e.module):
                    return cycle
                path.pop()
        state[node] = 2
        return None

    for node in sorted({*nodes, *(e.prereq for e in edges), *(e.module for e in edges)}):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def break_cycles(nodes: Iterable[str], edges: Iterable[Edge]) -> list[Edge]:
    """Drop the weakest edge of each cycle until the graph is a DAG."""
    nodes, kept = list(nodes), list(dict.fromkeys(edges))
    while cycle := find_cycle(nodes, kept):
        kept.remove(min(cycle, key=_edge_weight))
    return kept


def topological_layers(nodes: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Layers of a DAG restricted to `nodes`: a node enters once all its in-set prerequisites are placed."""
    nodes = sorted(set(nodes))
    inside = [e for e in edges if e.prereq in nodes and e.module in nodes]
    placed: set[str] = set()
    layers: list[list[str]] = []
    while len(placed) < len(nodes):
        layer = [n for n in nodes if n not in placed and prerequisites(inside, n) <= placed]
        if not layer:
            raise ValueError("graph has a cycle; call break_cycles first")
        layers.append(layer)
        placed.update(layer)
    return layers

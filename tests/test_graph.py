"""The prerequisite graph: neighbours, ancestors, cycles and topological layers (DESIGN §2.4, §3.1)."""

from __future__ import annotations

import pytest

from ioa.graph import (
    SOURCE_TRUST,
    Edge,
    ancestors,
    break_cycles,
    dependents,
    find_cycle,
    prerequisites,
    topological_layers,
)

# A diamond: facts → {add, mul} → word; copy is isolated.
DIAMOND = [
    Edge("facts", "add", "declared"),
    Edge("facts", "mul", "declared"),
    Edge("add", "word", "proposed"),
    Edge("mul", "word", "measured", 0.5),
]
NODES = ["word", "mul", "add", "facts", "copy"]


def test_prerequisites_and_dependents_are_direct_only() -> None:
    assert prerequisites(DIAMOND, "word") == {"add", "mul"}
    assert prerequisites(DIAMOND, "facts") == set()
    assert dependents(DIAMOND, "facts") == {"add", "mul"}
    assert dependents(DIAMOND, "word") == set()


def test_ancestors_are_transitive_and_exclude_the_module() -> None:
    assert ancestors(DIAMOND, "word") == {"add", "mul", "facts"}
    assert ancestors(DIAMOND, "add") == {"facts"}
    assert ancestors(DIAMOND, "facts") == set()
    assert ancestors(DIAMOND, "copy") == set()


def test_ancestors_terminate_on_a_cycle() -> None:
    cycle = [Edge("a", "b", "declared"), Edge("b", "a", "declared")]
    assert ancestors(cycle, "a") == {"a", "b"}


def test_find_cycle_none_on_a_dag() -> None:
    assert find_cycle(NODES, DIAMOND) is None


def test_find_cycle_returns_the_cycle_edges() -> None:
    edges = [*DIAMOND, Edge("word", "facts", "measured", 0.4)]
    cycle = find_cycle(NODES, edges)
    assert cycle is not None
    # A closed walk: each edge starts where the previous one ended.
    assert all(a.module == b.prereq for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True))
    assert Edge("word", "facts", "measured", 0.4) in cycle


def test_trust_order() -> None:
    assert SOURCE_TRUST["declared"] > SOURCE_TRUST["proposed"] > SOURCE_TRUST["measured"]


@pytest.mark.parametrize(
    ("weak", "strong"),
    [
        (Edge("b", "a", "measured", 0.4), Edge("a", "b", "measured", 0.8)),  # weaker strength loses
        (Edge("b", "a", "measured", 1.0), Edge("a", "b", "proposed")),  # proposed beats any measured
        (Edge("b", "a", "proposed"), Edge("a", "b", "declared")),  # declared beats proposed
    ],
)
def test_break_cycles_drops_the_weakest_edge(weak: Edge, strong: Edge) -> None:
    assert break_cycles(["a", "b"], [weak, strong]) == [strong]
    assert break_cycles(["a", "b"], [strong, weak]) == [strong]  # order of input does not matter


def test_break_cycles_on_a_three_cycle_keeps_a_dag() -> None:
    edges = [Edge("a", "b", "declared"), Edge("b", "c", "declared"), Edge("c", "a", "measured", 0.9)]
    kept = break_cycles(["a", "b", "c"], edges)
    assert kept == edges[:2]
    assert find_cycle(["a", "b", "c"], kept) is None


def test_break_cycles_drops_duplicates_and_keeps_a_dag_unchanged() -> None:
    assert break_cycles(NODES, [*DIAMOND, DIAMOND[0]]) == DIAMOND


def test_topological_layers_of_the_diamond() -> None:
    # facts and the isolated copy have no prerequisites; add/mul need facts; word needs both.
    assert topological_layers(NODES, DIAMOND) == [["copy", "facts"], ["add", "mul"], ["word"]]


def test_topological_layers_ignore_edges_leaving_the_subset() -> None:
    # Without facts in the set, add and mul have no in-set prerequisite left.
    assert topological_layers(["word", "add", "mul"], DIAMOND) == [["add", "mul"], ["word"]]
    assert topological_layers([], DIAMOND) == []


def test_topological_layers_reject_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        topological_layers(["a", "b"], [Edge("a", "b", "declared"), Edge("b", "a", "declared")])

"""Connected components: union-find and the large-star/small-star rounds on hand-made graphs.

The rounds run over an in-process ``Shuffle`` that hash-partitions tables like Ray Data would, so
every grouping step sees only its partition.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xxhash

from pipeline.dedup.components import NEIGHBOUR_SCHEMA, large_star, small_star, star_rounds, union_find


class LocalShuffle:
    def __init__(self, partitions: int):
        self.partitions = partitions

    def by_key(self, data, key, fn, prepare=None):
        if prepare is not None:
            data = pa.concat_tables([prepare(data.slice(0, 1)), prepare(data.slice(1))])  # any slicing
        part = np.array([xxhash.xxh32_intdigest(v.encode()) % self.partitions for v in data[key].to_pylist()])
        return pa.concat_tables([fn(data.filter(pa.array(part == p))) for p in range(self.partitions)])

    def total(self, data, column):
        return pc.sum(data[column]).as_py() or 0


def edges_of(pairs: list[tuple[str, str]]) -> pa.Table:
    pairs = [(min(a, b), max(a, b)) for a, b in pairs]
    return pa.table({"lo": [a for a, _ in pairs], "hi": [b for _, b in pairs]}, schema=pa.schema([("lo", pa.string()), ("hi", pa.string())]))


def labels_dict(labels: pa.Table) -> dict[str, tuple[str, int]]:
    rows = zip(labels["node"].to_pylist(), labels["label"].to_pylist(), labels["size"].to_pylist())
    result = {node: (label, size) for node, label, size in rows}
    assert len(result) == labels.num_rows, "every node is labelled once"
    return result


def expected_labels(pairs: list[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """Components by breadth-first search: the obvious way."""
    graph: dict[str, set[str]] = {}
    for a, b in pairs:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set()).add(a)
    result, seen = {}, set()
    for start in graph:
        if start in seen:
            continue
        component, frontier = {start}, [start]
        while frontier:
            for nbr in graph[frontier.pop()] - component:
                component.add(nbr)
                frontier.append(nbr)
        seen |= component
        result.update({node: (min(component), len(component)) for node in component})
    return result


def names(n: int, seed: int) -> list[str]:
    """n node names whose sort order is unrelated to their position in a path or star."""
    rng = random.Random(seed)
    labels = [f"n{i:05d}" for i in range(n)]
    rng.shuffle(labels)
    return labels


def chain(nodes: list[str]) -> list[tuple[str, str]]:
    return list(zip(nodes, nodes[1:]))


GRAPHS = {
    "single edge": [("a", "b")],
    "chain in order": chain([f"n{i:03d}" for i in range(20)]),
    "chain in reverse": chain([f"n{i:03d}" for i in range(20)][::-1]),
    "star around the largest": [(f"leaf{i}", "zz-centre") for i in range(30)],
    "star around the smallest": [("a-centre", f"leaf{i}") for i in range(30)],
    "two components": [("a", "c"), ("c", "e"), ("b", "d"), ("d", "f")],
    "cycle": chain(["e", "b", "d", "a", "c"]) + [("c", "e")],
    "long shuffled path": chain(names(300, seed=1)),
    "tree of stars": [(f"h{i}", f"h{i}-{j}") for i in range(10) for j in range(5)] + chain([f"h{i}" for i in range(10)]),
}


@pytest.mark.parametrize("name", GRAPHS)
def test_union_find(name):
    pairs = GRAPHS[name]
    assert labels_dict(union_find(edges_of(pairs))) == expected_labels(pairs)


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", GRAPHS)
def test_star_rounds(name, partitions):
    pairs = GRAPHS[name]
    labels, rounds = star_rounds(edges_of(pairs), LocalShuffle(partitions), max_rounds=50)
    assert labels_dict(labels) == expected_labels(pairs)
    assert rounds >= 1


def test_long_paths_need_several_rounds():
    pairs = chain(names(1000, seed=2))
    labels, rounds = star_rounds(edges_of(pairs), LocalShuffle(4), max_rounds=50)
    assert labels_dict(labels) == expected_labels(pairs)
    assert 3 <= rounds <= 30  # O(log^2 n): a path of 1000 needs a few, not hundreds


def test_random_graphs_agree_with_union_find():
    rng = random.Random(3)
    for trial in range(5):
        nodes = [f"{rng.randrange(10**6):06d}" for _ in range(400)]
        pairs = [(a, b) for a, b in (rng.sample(nodes, 2) for _ in range(300)) if a != b]
        labels, _ = star_rounds(edges_of(pairs), LocalShuffle(1 + trial), max_rounds=50)
        assert labels_dict(labels) == labels_dict(union_find(edges_of(pairs))) == expected_labels(pairs)


def test_rounds_stop_at_max_rounds():
    with pytest.raises(RuntimeError, match="did not converge in 1 rounds"):
        star_rounds(edges_of(chain(names(200, seed=4))), LocalShuffle(2), max_rounds=1)


def neighbours(pairs: list[tuple[str, str]]) -> pa.Table:
    return pa.table({"node": [a for a, _ in pairs], "nbr": [b for _, b in pairs]}, schema=NEIGHBOUR_SCHEMA)


def rows(table: pa.Table) -> set[tuple]:
    return set(zip(*(table[c].to_pylist() for c in table.column_names)))


def test_large_star_step():
    # Node c with neighbours a (smaller) and d, e (larger): d and e move to a, and c is no star yet.
    table = large_star(neighbours([("c", "a"), ("c", "d"), ("c", "e"), ("c", "d")]))
    assert rows(table) == {("a", "d", True), ("a", "e", True)}
    # Node a with only larger neighbours keeps its edges unchanged.
    assert rows(large_star(neighbours([("a", "b"), ("a", "c")]))) == {("a", "b", False), ("a", "c", False)}


def test_small_star_step():
    # Node e with smaller neighbours b, c: e and c move to b.
    assert rows(small_star(neighbours([("e", "c"), ("e", "b")]))) == {("b", "c", True), ("b", "e", True)}
    assert rows(small_star(neighbours([("e", "b")]))) == {("b", "e", False)}
    assert small_star(neighbours([])).num_rows == 0

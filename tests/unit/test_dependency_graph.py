"""The dependency graph check of a submission (secauto/dependencies.py): batch DAGs with local keys are
accepted exactly when acyclic, in an order where every entry follows its dependencies; everything
else is refused naming the field."""

from __future__ import annotations

import graphlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secauto.dependencies import (
    MAX_BATCH_EDGES,
    MAX_DEPENDENCIES,
    Entry,
    GraphInvalid,
    plan_batch,
)


@st.composite
def graphs(draw: st.DrawFn) -> list[list[int]]:
    """Random directed graphs on up to 12 nodes without self-loops or repeated edges: ``graph[i]`` are
    the nodes i depends on. A random DAG (edges only towards nodes earlier in a random ranking), plus
    as many random extra edges, which may close cycles: about half of them are acyclic."""
    size = draw(st.integers(min_value=1, max_value=12))
    rank = draw(st.permutations(range(size)))
    density = draw(st.sampled_from([0.1, 0.3, 0.6]))
    edges = {(node, other) for node in range(size) for other in range(size)
             if rank[other] < rank[node] and draw(st.floats(0, 1)) < density}
    pairs = st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)).filter(lambda pair: pair[0] != pair[1])
    if size > 1:
        edges |= set(draw(st.lists(pairs, max_size=6)))
    return [sorted(other for node_, other in edges if node_ == node) for node in range(size)]


def entries_of(graph: list[list[int]]) -> list[Entry]:
    return [Entry(f"k{node}", [f"k{parent}" for parent in parents]) for node, parents in enumerate(graph)]


def acyclic(graph: list[list[int]]) -> bool:
    """The oracle: the standard library's topological sorter."""
    try:
        tuple(graphlib.TopologicalSorter({node: set(parents) for node, parents in enumerate(graph)}).static_order())
    except graphlib.CycleError:
        return False
    return True


def reaches(graph: list[list[int]], start: int, goal: int) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return False


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_random_graphs_are_accepted_exactly_when_acyclic(graph: list[list[int]]) -> None:
    entries = entries_of(graph)
    try:
        plan = plan_batch(entries)
    except GraphInvalid as exc:
        assert not acyclic(graph)
        # Every edge it names lies on a cycle: its dependency leads back to it.
        for problem in exc.problems:
            assert "dependency cycle" in problem.message
            child = int(problem.field.split("[")[1].split("]")[0])
            position = int(problem.field.rsplit("[", 1)[1].rstrip("]"))
            parent = graph[child][position]
            assert reaches(graph, parent, child), (graph, problem)
        return
    assert acyclic(graph)
    assert sorted(plan.order) == list(range(len(graph)))
    placed = {node: at for at, node in enumerate(plan.order)}
    for node, parents in enumerate(graph):
        assert plan.parents[node] == parents
        assert all(placed[parent] < placed[node] for parent in parents)


def test_order_keeps_the_batch_order_where_the_graph_allows() -> None:
    assert plan_batch([Entry(None, []) for _ in range(5)]).order == [0, 1, 2, 3, 4]
    plan = plan_batch([Entry("c", ["a"]), Entry("a", []), Entry(None, []), Entry("b", ["c"])])
    assert plan.order == [1, 0, 2, 3]
    assert plan.parents == [[1], [], [], [0]]


def test_existing_job_ids_and_keys_resolve() -> None:
    plan = plan_batch([Entry("enrich", ["job-0123abc"]), Entry(None, ["enrich", "job-0123abc"])])
    assert plan.parents == [["job-0123abc"], [0, "job-0123abc"]]


def problems(entries: list[Entry]) -> dict[str, str]:
    with pytest.raises(GraphInvalid) as refused:
        plan_batch(entries)
    return {problem.field: problem.message for problem in refused.value.problems}


def test_self_dependency_duplicates_and_unknown_names_are_refused() -> None:
    found = problems([
        Entry("a", ["a"]),
        Entry("b", ["a", "a"]),
        Entry("a", []),
        Entry(None, ["no.such.key"]),  # (the API refuses such a name earlier: not a key or job id pattern)
    ])
    assert found["jobs[0].depends_on[0]"] == "a job cannot depend on itself (key 'a')"
    assert found["jobs[1].depends_on[1]"].startswith("'a' is listed twice")
    assert found["jobs[2].key"] == "duplicate key 'a' (also jobs[0].key)"
    assert found["jobs[3].depends_on[0]"] == "'no.such.key' is neither a key of this batch nor a job id"


def test_a_cycle_is_named_on_each_of_its_edges() -> None:
    found = problems([Entry("a", ["c"]), Entry("b", ["a"]), Entry("c", ["b"]), Entry("d", ["a"])])
    assert set(found) == {"jobs[0].depends_on[0]", "jobs[1].depends_on[0]", "jobs[2].depends_on[0]"}
    assert all(message.startswith("dependency cycle: jobs[") for message in found.values())
    assert "(a)" in found["jobs[0].depends_on[0]"] and "(c)" in found["jobs[0].depends_on[0]"]


def test_graphs_over_the_limits_are_refused() -> None:
    too_many = [Entry(None, [f"job-{i}" for i in range(MAX_DEPENDENCIES + 1)])]
    assert problems(too_many) == {"jobs[0].depends_on": f"{MAX_DEPENDENCIES + 1} dependencies; at most "
                                                        f"{MAX_DEPENDENCIES}"}
    per_job = MAX_DEPENDENCIES
    wide = [Entry(None, [f"job-{i}" for i in range(per_job)]) for _ in range(MAX_BATCH_EDGES // per_job + 1)]
    assert problems(wide) == {"jobs": f"{len(wide) * per_job} depends_on entries in one batch; at most "
                                      f"{MAX_BATCH_EDGES}"}

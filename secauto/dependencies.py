"""Job dependencies: the limits, and the check of a submission's dependency graph (``depends_on`` with
batch ``key``s) before anything reaches the store.

A batch is one DAG whose nodes are its entries; an entry's ``depends_on`` names other entries by their
``key`` or existing jobs by id (a name that is a key of the batch means that entry). :func:`plan_batch`
refuses duplicate keys, duplicate or self dependencies, names that are neither a key nor a job id,
cycles and graphs over the limits, each problem naming its field (``jobs[3].depends_on[1]``), and
otherwise gives the entries in an order where every entry comes after the entries it depends on (the
order the store needs: submit.lua stores a batch in one pass). Whether the job ids exist is checked
by the store, atomically with storing the batch.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from typing import Final

import msgspec

MAX_DEPENDENCIES: Final = 100  # depends_on entries per job
MAX_DEPENDENTS: Final = 1000  # jobs that may register as dependents of one job (checked by the store)
MAX_BATCH_EDGES: Final = 10_000  # depends_on entries in one batch, all jobs together
# A batch entry's key: like a job id, and usable in a template path ({{dependencies.KEY.context}}).
KEY_PATTERN: Final = r"[A-Za-z0-9_-]{1,100}"
JOB_ID_PATTERN: Final = r"[A-Za-z0-9_-]{1,100}"
_JOB_ID = re.compile(JOB_ID_PATTERN)


class GraphProblem(msgspec.Struct, frozen=True):
    """One thing wrong with a submission's dependencies: the field (``jobs[2].depends_on[0]``) and why."""

    field: str
    message: str


class GraphInvalid(Exception):
    """The dependency graph of a submission is refused; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[GraphProblem]) -> None:
        super().__init__("; ".join(f"{problem.field}: {problem.message}" for problem in problems))
        self.problems = list(problems)


class Entry(msgspec.Struct, frozen=True):
    """What the graph check needs of one batch entry."""

    key: str | None
    depends_on: Sequence[str]


class BatchPlan(msgspec.Struct, frozen=True):
    """A valid batch graph: ``order`` lists entry indexes, each after the entries it depends on;
    ``parents[i]`` is entry i's ``depends_on`` resolved: an ``int`` (another entry) or a ``str`` (an
    existing job id), in the order given."""

    order: list[int]
    parents: list[list[int | str]]


def plan_batch(entries: Sequence[Entry], *, field_prefix: str = "jobs") -> BatchPlan:
    """Check a batch's dependency graph and order it (see the module docstring).

    Raises :class:`GraphInvalid` listing every problem found (a cycle is reported once, on each of
    its edges, after the other problems are fixed).
    """
    problems: list[GraphProblem] = []
    keys: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.key is None:
            continue
        if entry.key in keys:
            problems.append(GraphProblem(f"{field_prefix}[{index}].key",
                                         f"duplicate key {entry.key!r} (also {field_prefix}[{keys[entry.key]}].key)"))
        else:
            keys[entry.key] = index
    edges = sum(len(entry.depends_on) for entry in entries)
    if edges > MAX_BATCH_EDGES:
        problems.append(GraphProblem(field_prefix, f"{edges} depends_on entries in one batch; at most "
                                                   f"{MAX_BATCH_EDGES}"))
    parents: list[list[int | str]] = []
    for index, entry in enumerate(entries):
        resolved: list[int | str] = []
        seen: dict[str, int] = {}
        if len(entry.depends_on) > MAX_DEPENDENCIES:
            problems.append(GraphProblem(f"{field_prefix}[{index}].depends_on",
                                         f"{len(entry.depends_on)} dependencies; at most {MAX_DEPENDENCIES}"))
        for position, name in enumerate(entry.depends_on):
            field = f"{field_prefix}[{index}].depends_on[{position}]"
            if name in seen:
                problems.append(GraphProblem(field, f"{name!r} is listed twice (also depends_on[{seen[name]}])"))
                continue
            seen[name] = position
            if name in keys:
                if keys[name] == index:
                    problems.append(GraphProblem(field, f"a job cannot depend on itself (key {name!r})"))
                    continue
                resolved.append(keys[name])
            elif _JOB_ID.fullmatch(name):
                resolved.append(name)
            else:
                problems.append(GraphProblem(field, f"{name!r} is neither a key of this batch nor a job id"))
        parents.append(resolved)
    if problems:
        raise GraphInvalid(problems)
    order = _topological_order(parents)
    if order is None:
        raise GraphInvalid(_cycle_problems(entries, parents, field_prefix))
    return BatchPlan(order=order, parents=parents)


def _topological_order(parents: list[list[int | str]]) -> list[int] | None:
    """Kahn's algorithm over the batch-internal edges, stable (lowest index first among the ready
    entries); None if there is a cycle."""
    count = len(parents)
    children: list[list[int]] = [[] for _ in range(count)]
    missing = [0] * count
    for child, names in enumerate(parents):
        for parent in names:
            if isinstance(parent, int):
                children[parent].append(child)
                missing[child] += 1
    ready = [index for index in range(count) if missing[index] == 0]  # sorted: already a heap
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for child in children[index]:
            missing[child] -= 1
            if missing[child] == 0:
                heapq.heappush(ready, child)
    return order if len(order) == count else None


def _cycle_problems(entries: Sequence[Entry], parents: list[list[int | str]], prefix: str) -> list[GraphProblem]:
    """One cycle of the graph (there is one), as a problem on each of its edges."""
    state = [0] * len(parents)  # 0 unseen, 1 on the current path, 2 done
    path: list[int] = []

    def name(index: int) -> str:
        key = entries[index].key
        return f"{prefix}[{index}]" + (f" ({key})" if key is not None else "")

    for start in range(len(parents)):
        if state[start]:
            continue
        # Iterative DFS along "depends on" edges: (node, next parent position).
        stack = [(start, 0)]
        state[start] = 1
        path.append(start)
        while stack:
            node, position = stack[-1]
            internal = [parent for parent in parents[node] if isinstance(parent, int)]
            if position == len(internal):
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            stack[-1] = (node, position + 1)
            parent = internal[position]
            if state[parent] == 1:
                cycle = path[path.index(parent):]  # each depends on the next, the last on the first
                text = " -> ".join(name(index) for index in [*cycle, cycle[0]])
                problems = []
                for at, child in enumerate(cycle):
                    target = cycle[(at + 1) % len(cycle)]
                    key = entries[target].key
                    position_of = list(entries[child].depends_on).index(key) if key is not None else 0
                    problems.append(GraphProblem(f"{prefix}[{child}].depends_on[{position_of}]",
                                                 f"dependency cycle: {text}"))
                return problems
            if state[parent] == 0:
                state[parent] = 1
                path.append(parent)
                stack.append((parent, 0))
    raise AssertionError("no cycle found in a graph without a topological order")

"""Bounded regular-expression search for the ``matches`` operator.

Python's ``re`` cannot be interrupted and holds the GIL, so a hostile pattern (``(a+)+$``) on a hostile
input could stall the node's event loop. The bounds:

* the pattern is at most :data:`MAX_PATTERN` characters, the input at most :data:`MAX_INPUT`;
* backreferences are refused (they make matching NP-hard);
* before matching, the worst-case backtracking cost of the pattern on an input of this length is
  estimated from its parse tree (each repeat multiplies by the number of ways it can match, branches
  add up, the search tries every start position). Cheap searches (at most :data:`INLINE_BUDGET`) run
  in-process; the others run in a separate, isolated Python process that is killed (its whole process
  group) after :data:`MATCH_TIMEOUT` seconds, which makes the step fail with a clear error.

Errors are :class:`~secauto.engine.errors.StepError`. Cancellation kills the helper process.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

import msgspec

from secauto.engine.errors import StepError
from secauto.engine.process import ProcessFailure, run_process

MAX_PATTERN = 512
MAX_INPUT = 65_536
INLINE_BUDGET = 5_000_000
MATCH_TIMEOUT = 2.0
_HUGE = 1e30

_parser: Any = importlib.import_module("re._parser")  # the stdlib's regex parser (no public API)
_MAXREPEAT: int = _parser.MAXREPEAT

_HELPER = (
    "import json,re,sys\nd=json.load(sys.stdin)\nsys.stdout.write('true' if re.search(d['p'],d['t']) else 'false')\n"
)


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used with ``matches``, or None."""
    if len(pattern) > MAX_PATTERN:
        return f"pattern longer than {MAX_PATTERN} characters"
    try:
        tree = _parser.parse(pattern)
    except re.error as exc:
        return f"bad pattern {pattern!r}: {exc}"
    except RecursionError:
        return "pattern nested too deeply"
    if _cost(tree, 1) >= _HUGE:
        return f"pattern {pattern!r} uses backreferences, which 'matches' does not allow"
    return None


def estimate_cost(pattern: str, length: int) -> float:
    """Worst-case backtracking steps for a search of ``pattern`` in a text of ``length`` characters."""
    return min(_HUGE, (length + 1) * _cost(_parser.parse(pattern), length))


def _cost(tree: Any, n: int) -> float:
    total = 1.0
    for op, av in tree:
        name = str(op)
        factor = 1.0
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, item = av
            high = min(n if high == _MAXREPEAT else high, max(n, low))
            inner = _cost(item, n)
            if inner >= _HUGE:
                factor = _HUGE
            elif inner <= 1.0:
                factor = max(1.0, float(high - low + 1))
            else:
                factor = sum(inner**i for i in range(low, min(high, 200) + 1)) if high <= 200 else _HUGE
        elif name == "BRANCH":
            factor = sum(_cost(alt, n) for alt in av[1])
        elif name == "SUBPATTERN":
            factor = _cost(av[3], n)
        elif name == "ATOMIC_GROUP":
            factor = _cost(av, n)
        elif name in ("ASSERT", "ASSERT_NOT"):
            factor = _cost(av[1], n)
        elif name in ("GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "GROUPREF_LOC_IGNORE", "GROUPREF_UNI_IGNORE"):
            factor = _HUGE
        total = min(_HUGE, total * factor)
    return total


async def search(pattern: str, text: str) -> bool:
    """``re.search(pattern, text) is not None``, bounded as described above."""
    problem = pattern_problem(pattern)
    if problem:
        raise StepError(f"'matches': {problem}")
    if len(text) > MAX_INPUT:
        raise StepError(f"'matches': input longer than {MAX_INPUT} characters")
    if estimate_cost(pattern, len(text)) <= INLINE_BUDGET:
        return re.search(pattern, text) is not None
    return await _search_isolated(pattern, text)


async def _search_isolated(pattern: str, text: str) -> bool:
    try:
        outcome = await run_process(
            [sys.executable, "-I", "-S", "-c", _HELPER],
            stdin=msgspec.json.encode({"p": pattern, "t": text}),
            env={},
            cwd=None,
            time_limit=MATCH_TIMEOUT,
            max_output_bytes=4096,
        )
    except ProcessFailure as exc:
        raise StepError(f"'matches': pattern {pattern[:80]!r} is too costly on this input ({exc})") from None
    if outcome.returncode != 0 or outcome.stdout not in (b"true", b"false"):
        tail = outcome.stderr[-300:].decode(errors="replace").strip()
        raise StepError(f"'matches': the isolated matcher failed: {tail or outcome.returncode}")
    return outcome.stdout == b"true"

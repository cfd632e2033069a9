"""Read which metric names and label names a PromQL expression uses (for the monitoring tests).

Not a full PromQL parser: a tokenizer plus the few rules that tell names apart. An identifier is a
function or aggregation when an opening parenthesis (or, for aggregations, ``by``/``without``) follows
it, a label name inside ``{...}`` and in the lists after ``by``, ``without``, ``on``, ``ignoring``,
``group_left`` and ``group_right``, a keyword when PromQL reserves it, and a metric name otherwise.
String contents never count; names starting with a colon (legal for recording rules) are not read.
Each selector also records the aggregations around it, innermost first. Anything the tokenizer does
not know raises ``ValueError``, so an unexpected construct fails the tests instead of hiding a name.
Syntax itself is promtool's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|<=|>=|[-+*/%^<>=,(){}\[\]:@])
""", re.VERBOSE)

AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile"})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


@dataclass
class Selector:
    """One vector selector: its metric name and label matchers (label -> (operator, value))."""

    metric: str
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)
    aggregations: list[str] = field(default_factory=list)  # the enclosing ones, innermost first


@dataclass
class Names:
    selectors: list[Selector] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)  # in matchers and in grouping lists

    @property
    def metrics(self) -> set[str]:
        return {selector.metric for selector in self.selectors}


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pairs without whitespace; raises ValueError on a character PromQL does not use."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position:position + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            found.append((kind, match.group()))
        position = match.end()
    return found


def _unquote(text: str) -> str:
    return text[1:-1] if text[0] == "`" else re.sub(r"\\(.)", r"\1", text[1:-1])


def names(expr: str) -> Names:
    """The selectors and label names of ``expr``; raises ValueError for what it cannot classify."""
    toks = tokens(expr)
    result = Names()
    index = 0

    def expect(text: str) -> None:
        nonlocal index
        if index >= len(toks) or toks[index][1] != text:
            raise ValueError(f"expected {text!r} at token {index} of {expr!r}")
        index += 1

    def label_list() -> None:
        nonlocal index
        expect("(")
        while toks[index][1] != ")":
            kind, text = toks[index]
            if kind == "ident":
                result.labels.add(text)
            elif text != ",":
                raise ValueError(f"unexpected {text!r} in a label list of {expr!r}")
            index += 1
        index += 1

    def matchers() -> dict[str, tuple[str, str]]:
        nonlocal index
        expect("{")
        found: dict[str, tuple[str, str]] = {}
        while toks[index][1] != "}":
            if toks[index][1] == ",":
                index += 1
                continue
            (label_kind, label), (_, op), (value_kind, value) = toks[index:index + 3]
            if label_kind != "ident" or op not in MATCH_OPS or value_kind != "string":
                raise ValueError(f"cannot read the matcher at token {index} of {expr!r}")
            found[label] = (op, _unquote(value))
            result.labels.add(label)
            index += 3
        index += 1
        return found

    parens: list[str | None] = []  # per open parenthesis: the aggregation it belongs to, if any
    pending_aggregation: str | None = None  # seen "sum" (and maybe "by (...)"), its "(" not yet
    while index < len(toks):
        kind, text = toks[index]
        following = toks[index + 1][1] if index + 1 < len(toks) else ""
        if kind == "ident" and text in GROUPING and following == "(":
            index += 1
            label_list()
            continue
        index += 1
        if kind == "ident" and text in AGGREGATIONS:
            pending_aggregation = text
        elif kind == "ident" and (text in KEYWORDS or following == "("):
            pass
        elif kind == "ident":
            selector = Selector(text, matchers() if following == "{" else {},
                                [name for name in reversed(parens) if name is not None])
            result.selectors.append(selector)
        elif text == "{":
            raise ValueError(f"a selector without a metric name ({{__name__=...}}) in {expr!r}")
        elif text == "(":
            parens.append(pending_aggregation)
            pending_aggregation = None
        elif text == ")":
            if not parens:
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            parens.pop()
    return result

"""Redaction: every secret value known to this process reads ``***`` wherever data leaves it.

The node registers a value here before anything can see it (when the vault decrypts it for a step,
loads the stored secrets, or stores a new one), and the boundaries where data leaves the process ask
this module to mask it: the executor's attempt record (results, context, errors) before it is
written to Redis and published as events, the event payloads sent over SSE and to webhooks, every
JSON answer of the API, and every log line (a loguru patcher, :func:`install_log_redaction`).

Why one redactor per process: loguru's logger is process-wide, and a value known anywhere in the
process must be masked in every line and answer of that process, whichever part revealed it.

Forms caught, for a value ``V`` (values are at least :data:`MIN_SECRET_LENGTH` characters, so that
masking never eats ordinary words):

* ``V`` itself;
* ``V`` escaped as inside a JSON string (quotes, backslashes, control characters; also with non-ASCII
  as ``\\uXXXX``, as Python's ``json.dumps`` writes it) and as inside a Python ``repr`` (what error
  messages quote with ``!r``), and each of those escaped once more (a JSON document quoted inside a
  JSON string, a repr of a JSON text...);
* ``V`` percent-encoded (``quote`` and ``quote_plus``) and ``V`` in base64 (standard and URL-safe,
  with or without padding) when the encoding of ``V`` as a whole appears.

Not caught: other encodings (hex, ...), base64 of a text that merely contains ``V`` (an HTTP Basic
header of ``user:V``), parts of ``V`` (a script that prints it in pieces), or ``V`` transformed in any
other way (case changed, reversed, compressed, hashed). Values are remembered for the life of the
process (a deleted or replaced secret stays masked), up to :data:`MAX_VALUES`.

Matching uses one regular expression shaped as a trie of all forms, so a search costs about one
pass over the text whatever the number of secrets. Before it, a cheaper test looks for *anchors*: the
longest run of ASCII letters and digits of each value and of its base64 form. No escaping above
changes letters or digits, so every form holds one of them; text without any anchor holds no form
(values without a usable anchor always take the regular expression). The compiled state is replaced
atomically, so readers (the log patcher may run in any thread) never see a half-built one.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import msgspec

MASK = "***"
MIN_SECRET_LENGTH = 8
MAX_VALUES = 10_000
_ESCAPE_ROUNDS = 2  # forms of forms: a JSON document quoted in a JSON string, a repr of a JSON text


def _json_escaped(text: str) -> str:
    return msgspec.json.encode(text).decode()[1:-1]


def _ascii_json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


def _repr_escaped(text: str) -> str:
    return repr(text)[1:-1]


def _repr_escaped_single(text: str) -> str:
    # repr() picks double quotes for a text holding ' but no "; inside a longer text that also holds
    # ", the same value is written with single quotes and \' escapes. Force that style.
    return repr(text + "'\"")[1:-4]


_ESCAPES = (_json_escaped, _ascii_json_escaped, _repr_escaped, _repr_escaped_single)


def forms_of(value: str) -> set[str]:
    """Every form of ``value`` that the redactor masks (see the module docstring)."""
    found = {value}
    frontier = {value}
    for _ in range(_ESCAPE_ROUNDS):
        frontier = {escape(form) for form in frontier for escape in _ESCAPES} - found
        found |= frontier
    found |= {quote(value, safe=""), quote_plus(value, safe="")}
    raw = value.encode()
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        found |= {encoded, encoded.rstrip("=")}
    return {form for form in found if len(form) >= MIN_SECRET_LENGTH}


def trie_pattern(words: Iterable[str]) -> str:
    """A regular expression matching any of ``words`` (longest first at each branch), shaped as a trie
    so that the engine follows one branch per character instead of trying every word in turn."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a word

    def build(node: dict[str, Any]) -> str:
        # Runs of single-child nodes become one literal, so recursion happens at branch points only
        # (long values do not nest deeply).
        literal: list[str] = []
        while len(node) == 1 and "" not in node:
            ((char, node),) = node.items()
            literal.append(char)
        ends = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        head = re.escape("".join(literal))
        if not branches:
            return head
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # A word may stop here: the longer continuation is tried first, then nothing.
        return head + (f"(?:{body})?" if ends else body)

    return build(root)


_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
MIN_ANCHOR = 4


def anchors_of(value: str) -> tuple[str, ...] | None:
    """Substrings that every form of ``value`` contains one of (see the module docstring), or None
    when the value has no run of letters and digits long enough to be a useful anchor."""
    found = []
    for text in (value, base64.b64encode(value.encode()).decode()):
        runs = _ALNUM_RUN.findall(text)
        longest = max(runs, key=len) if runs else ""
        if len(longest) < MIN_ANCHOR:
            return None
        found.append(longest)
    return tuple(found)


class _Compiled:
    """The matchers for one set of values: on text, and on JSON-encoded bytes (a quick pre-check)."""

    __slots__ = ("anchors", "json", "text")

    def __init__(self, values: Iterable[str]) -> None:
        values = list(values)
        forms = {form for value in values for form in forms_of(value)}
        self.text = re.compile(trie_pattern(forms))
        # A string holding form F appears in a JSON document as F JSON-escaped (and the forms as they
        # are, for payloads that turn out not to be JSON).
        self.json = re.compile(trie_pattern(forms | {_json_escaped(form) for form in forms}).encode())
        anchors: set[str] | None = set()
        for value in values:
            found = anchors_of(value)
            if found is None or anchors is None:
                anchors = None
                continue
            anchors.update(found)
        # Letters and digits look the same in text, in JSON and in UTF-8 bytes.
        self.anchors = None if anchors is None else (tuple(anchors), tuple(a.encode() for a in anchors))

    def may_hold(self, text: str) -> bool:
        return self.anchors is None or any(anchor in text for anchor in self.anchors[0])

    def may_hold_bytes(self, data: bytes) -> bool:
        return self.anchors is None or any(anchor in data for anchor in self.anchors[1])


class RedactedError(Exception):
    """Stands in for a logged exception whose message held a secret (its text, masked)."""


class Redactor:
    """The secret values to mask and the functions that mask them. Thread-safe."""

    def __init__(self, *, max_values: int = MAX_VALUES) -> None:
        self.max_values = max_values
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}  # insertion-ordered set
        self._compiled: _Compiled | None = None

    @property
    def active(self) -> bool:
        """Whether any value is registered (when not, every function returns its input at once)."""
        return self._compiled is not None

    def add(self, values: Iterable[str], *, current: Iterable[str] | None = None) -> None:
        """Register ``values`` (shorter ones than MIN_SECRET_LENGTH are ignored: the API refuses them).

        Past ``max_values``, the oldest values not in ``current`` (the secrets stored now, when the
        caller knows them) are forgotten first.
        """
        fresh = [value for value in values if len(value) >= MIN_SECRET_LENGTH and value not in self._values]
        if not fresh:
            return
        with self._lock:
            for value in fresh:
                self._values[value] = None
            if len(self._values) > self.max_values:
                keep = set(current or ()) | set(fresh)
                for value in list(self._values):
                    if len(self._values) <= self.max_values:
                        break
                    if value not in keep:
                        del self._values[value]
            self._compiled = _Compiled(self._values) if self._values else None

    def clear(self) -> None:
        """Forget every value (tests)."""
        with self._lock:
            self._values.clear()
            self._compiled = None

    def text(self, text: str) -> str:
        """``text`` with every form of every value replaced by ``***``."""
        compiled = self._compiled
        if compiled is None or not text or not compiled.may_hold(text):
            return text
        return compiled.text.sub(MASK, text)

    def found(self, text: str) -> bool:
        compiled = self._compiled
        return compiled is not None and compiled.may_hold(text) and compiled.text.search(text) is not None

    def found_in_json(self, encoded: bytes) -> bool:
        """Whether the JSON document ``encoded`` may hold a value (a cheap test before :meth:`value`;
        a false positive only costs the walk)."""
        compiled = self._compiled
        return (compiled is not None and compiled.may_hold_bytes(encoded)
                and compiled.json.search(encoded) is not None)

    def value(self, data: Any) -> Any:
        """A copy of ``data`` (JSON-like: dicts, lists, strings, scalars) with every string masked,
        object keys included. Data nested too deeply to walk is replaced by ``***`` as a whole."""
        compiled = self._compiled
        if compiled is None:
            return data
        try:
            return _walk(data, compiled.text)
        except RecursionError:
            return MASK

    def json_bytes(self, payload: bytes) -> bytes:
        """A JSON document with every string masked; the same bytes when nothing needs masking.
        The key order is kept (events must start with ``{"type":``). Payloads that are not JSON are
        masked as text."""
        compiled = self._compiled
        if compiled is None or not compiled.may_hold_bytes(payload) or compiled.json.search(payload) is None:
            return payload
        try:
            data = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return compiled.text.sub(MASK, payload.decode(errors="replace")).encode()
        return msgspec.json.encode(self.value(data))


def _walk(data: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(data, str):
        return pattern.sub(MASK, data)
    if isinstance(data, list | tuple):
        return [_walk(item, pattern) for item in data]
    if isinstance(data, dict):
        return {(pattern.sub(MASK, key) if isinstance(key, str) else key): _walk(item, pattern)
                for key, item in data.items()}
    return data


# The process's redactor: the node registers values in it and every boundary masks with it.
REDACTOR = Redactor()


def _masked_exception(value: BaseException, redactor: Redactor) -> RedactedError | None:
    """A stand-in for ``value`` when its message (or one in its chain) holds a secret, else None."""
    seen: set[int] = set()
    current: BaseException | None = value
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if redactor.found(str(current)):
            return RedactedError(redactor.text(str(value)))
        current = current.__cause__ or current.__context__
    return None


def patch_record(record: Any) -> None:
    """Mask secret values in a loguru record (or a dict with its ``message``, ``extra`` and
    ``exception``), in place."""
    redactor = REDACTOR
    if not redactor.active:
        return
    record["message"] = redactor.text(record["message"])
    extra = record["extra"]
    for key, item in list(extra.items()):
        if isinstance(item, str):
            extra[key] = redactor.text(item)
        elif item is not None and not isinstance(item, int | float | bool) and redactor.found(str(item)):
            extra[key] = redactor.text(str(item))
    exception = record["exception"]
    if exception is not None and exception.value is not None:
        stand_in = _masked_exception(exception.value, redactor)
        if stand_in is not None:
            # The stand-in keeps the type name in the text and the traceback (source lines only: the
            # node's sinks never print local variables), but not the original message or chain.
            record["exception"] = type(exception)(exception.type, stand_in, exception.traceback)


def install_log_redaction() -> None:
    """Mask secret values in every log record, for every sink (loguru's process-wide patcher).
    Idempotent; it replaces any other patcher configured with ``logger.configure``."""
    from loguru import logger

    logger.configure(patcher=patch_record)

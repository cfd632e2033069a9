"""The redactor: which forms of a secret value are masked, in text, data, JSON and log records."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

from secauto.redaction import (
    MASK,
    REDACTOR,
    Redactor,
    anchors_of,
    forms_of,
    install_log_redaction,
    trie_pattern,
)

VALUE = 'p4ss"w0rd\\with\'quotes-7f3a'


@pytest.fixture
def redactor() -> Redactor:
    masker = Redactor()
    masker.add([VALUE])
    return masker


@pytest.fixture
def process_redactor() -> Iterator[Redactor]:
    REDACTOR.add([VALUE])
    install_log_redaction()
    yield REDACTOR
    REDACTOR.clear()


@pytest.mark.parametrize("shown", [
    VALUE,
    json.dumps(VALUE)[1:-1],  # inside a JSON string
    json.dumps(json.dumps(VALUE))[1:-1],  # a JSON document quoted in a JSON string
    repr(VALUE)[1:-1],  # an error message quoting with !r
    repr(json.dumps({"echo": VALUE})),  # !r of a script's JSON stdout
    json.dumps(repr(VALUE)),
    quote(VALUE, safe=""),
    quote_plus(VALUE),
    base64.b64encode(VALUE.encode()).decode(),
    base64.urlsafe_b64encode(VALUE.encode()).decode().rstrip("="),
], ids=["raw", "json", "json-json", "repr", "repr-of-json", "json-of-repr", "url", "url-plus", "b64", "b64url"])
def test_every_encoded_form_is_masked(redactor: Redactor, shown: str) -> None:
    text = f"before {shown} after"
    masked = redactor.text(text)
    assert masked.startswith("before ") and masked.endswith(" after") and MASK in masked
    assert "p4ss" not in masked and "7f3a" not in masked


def test_non_ascii_value_escaped_by_pythons_json() -> None:
    masker = Redactor()
    masker.add(["clé-secrète-ünïcode"])
    assert masker.text(json.dumps({"v": "clé-secrète-ünïcode"})) == '{"v": "***"}'
    assert masker.text(msgspec.json.encode({"v": "clé-secrète-ünïcode"}).decode()) == '{"v":"***"}'


def test_what_is_not_caught_is_documented(redactor: Redactor) -> None:
    # Hex, parts, and base64 of a longer text holding the value are not recognised (see the docstring).
    for shown in (VALUE.encode().hex(), VALUE[:6], base64.b64encode(f"user:{VALUE}".encode()).decode()):
        assert redactor.text(shown) == shown


def test_short_values_are_ignored_and_unknown_text_is_returned_as_is() -> None:
    masker = Redactor()
    masker.add(["short"])
    assert not masker.active and masker.text("short") == "short"
    masker.add(["longer-value"])
    text = "nothing to see"
    assert masker.text(text) is text


def test_data_is_walked_keys_included(redactor: Redactor) -> None:
    data = {"a": [VALUE, {"deep": f"x{VALUE}y"}], VALUE: 1, "n": 3, "t": None, "s": "plain"}
    assert redactor.value(data) == {"a": [MASK, {"deep": f"x{MASK}y"}], MASK: 1, "n": 3, "t": None, "s": "plain"}


def test_json_bytes_keeps_order_and_identity_when_clean(redactor: Redactor) -> None:
    event = msgspec.json.encode({"type": "job.failed", "error": f"stderr: {VALUE}", "attempt": 1})
    masked = redactor.json_bytes(event)
    assert masked.startswith(b'{"type":"job.failed"') and msgspec.json.decode(masked)["error"] == f"stderr: {MASK}"
    clean = b'{"type":"job.completed"}'
    assert redactor.json_bytes(clean) is clean
    assert redactor.json_bytes(f"not json {VALUE}".encode()) == f"not json {MASK}".encode()


def test_a_value_that_is_the_prefix_of_another_is_masked_whole() -> None:
    masker = Redactor()
    masker.add(["secret-value-1", "secret-value-12345"])
    assert masker.text("a secret-value-12345 b secret-value-1 c") == f"a {MASK} b {MASK} c"


def test_past_the_cap_old_values_not_stored_any_more_are_forgotten_first() -> None:
    masker = Redactor(max_values=3)
    masker.add(["old-value-1", "old-value-2", "kept-value-3"])
    masker.add(["new-value-4"], current=["kept-value-3", "new-value-4"])
    assert masker.text("old-value-1 old-value-2 kept-value-3 new-value-4") == f"old-value-1 {MASK} {MASK} {MASK}"


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.text(min_size=8, max_size=20), min_size=1, max_size=6),
       noise=st.text(max_size=30))
def test_no_registered_value_survives(values: list[str], noise: str) -> None:
    masker = Redactor()
    masker.add(values)
    text = noise.join(values) + noise
    masked = masker.text(text)
    for value in values:
        assert value not in masked


@settings(max_examples=200, deadline=None)
@given(value=st.text(min_size=8, max_size=40))
def test_every_form_holds_an_anchor(value: str) -> None:
    # The cheap pre-test may only skip texts that hold no form: every form must contain an anchor.
    anchors = anchors_of(value)
    if anchors is not None:
        for form in forms_of(value):
            assert any(anchor in form for anchor in anchors), (form, anchors)


def test_values_without_anchors_are_masked_all_the_same() -> None:
    masker = Redactor()
    masker.add(["!@#$%^&*()_+", "abc-def-ghi-jkl"])  # no run of 4 letters or digits in either
    assert anchors_of("!@#$%^&*()_+") is None
    assert masker.text("x !@#$%^&*()_+ y abc-def-ghi-jkl") == f"x {MASK} y {MASK}"
    assert masker.found_in_json(msgspec.json.encode({"k": "!@#$%^&*()_+"}))


def test_trie_pattern_matches_exactly_the_words() -> None:
    import re

    words = ["abc", "abcd", "abd", "x", "x.y*"]
    pattern = re.compile(f"^(?:{trie_pattern(words)})$")
    assert all(pattern.match(word) for word in words)
    assert not any(pattern.match(word) for word in ("ab", "abcde", "xy", "x.yy", ""))


def test_forms_skip_what_is_shorter_than_the_minimum() -> None:
    assert all(len(form) >= 8 for form in forms_of("12345678"))


def test_log_records_are_masked_in_message_extra_and_exception(process_redactor: Redactor) -> None:
    buffer = io.StringIO()
    sink = logger.add(buffer, format="{message} | {extra} | {exception}", level="DEBUG", diagnose=False)
    try:
        logger.bind(header=f"Bearer {VALUE}").info("step failed: stderr {}", VALUE)
        try:
            try:
                raise KeyError(VALUE)
            except KeyError as inner:
                raise RuntimeError("wrapper") from inner
        except RuntimeError:
            logger.exception("an action crashed")
    finally:
        logger.remove(sink)
    text = buffer.getvalue()
    assert "p4ss" not in text and "7f3a" not in text
    assert "step failed: stderr ***" in text and "Bearer ***" in text and "RedactedError: wrapper" in text

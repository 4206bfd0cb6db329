"""kthybrid_serve.untrusted: bounded JSON and terminal-safe strings."""

from __future__ import annotations

import time

import pytest
from kthybrid_serve.errors import ModelIncompleteError, UsageError
from kthybrid_serve.untrusted import MAX_INT_DIGITS, MAX_JSON_DEPTH, parse_json, printable


def refusal(data: str | bytes) -> str:
    with pytest.raises(ModelIncompleteError) as caught:
        parse_json(data, "config.json", ModelIncompleteError, "download it again")
    return caught.value.message


def test_plain_json_is_read() -> None:
    assert parse_json('{"a": [1, 2.5, "x"]}', "f", UsageError, "fix") == {"a": [1, 2.5, "x"]}


def test_nesting_at_the_bound_is_read() -> None:
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(deep, "f", UsageError, "fix") is not None


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 200_000])
def test_deeper_nesting_is_refused_fast(depth: int) -> None:
    start = time.monotonic()
    message = refusal('{"a":' * depth + "1" + "}" * depth)
    assert f"config.json nests deeper than {MAX_JSON_DEPTH} levels; download it again" == message
    assert time.monotonic() - start < 2


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"name": "' + "[" * 10_000 + '"}'
    assert parse_json(text, "f", UsageError, "fix") == {"name": "[" * 10_000}


def test_an_integer_past_the_digit_limit_is_refused() -> None:
    message = refusal('{"hidden_size": ' + "9" * (MAX_INT_DIGITS + 1) + "}")
    assert f"an integer of {MAX_INT_DIGITS + 1} digits" in message


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(number: str) -> None:
    assert "config.json holds" in refusal('{"x": ' + number + "}")


@pytest.mark.parametrize("data", [b"\xff\xfe", '{"a": ', "[1,]", "{'a': 1}"])
def test_garbage_is_one_refusal(data: str | bytes) -> None:
    assert refusal(data).startswith("config.json is not")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("red\x1b[31m", "red\\x1b[31m"),
        ("two\nlines\r", "two\\nlines\\r"),
        ("bell\x07\x00", "bell\\x07\\x00"),
        ("\u202eevil", "\\u202eevil"),
        ("line\u2028sep", "line\\u2028sep"),
        ("c1\x9b", "c1\\x9b"),
        ("del\x7f", "del\\x7f"),
    ],
)
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_long_strings_are_cut() -> None:
    assert printable("a" * 1000, limit=10) == "a" * 10 + "..."

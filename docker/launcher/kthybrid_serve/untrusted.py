"""Reading and showing untrusted text: bounded JSON, and strings made safe for a terminal.

Every JSON document the launcher reads (config.json, the safetensors index and shard
headers, KTHYBRID_EXTRA_ARGS, tune records) goes through `parse_json`: nesting deeper than
MAX_JSON_DEPTH, integers of more than MAX_INT_DIGITS digits, NaN, Infinity and numbers that
overflow to infinity are refusals of the caller's error class, never a RecursionError or a
ValueError traceback. Every string from a host tree, a model, a record or the environment
that reaches plan or doctor output goes through `printable`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any, NoReturn

# No file the launcher reads nests deeper than a few levels (config.json: 3 or 4).
MAX_JSON_DEPTH = 64
# Python's own limit for int(str) (sys.int_info.default_max_str_digits).
MAX_INT_DIGITS = 4300

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
_OPENS = re.compile(r"[\[{]{" + str(MAX_JSON_DEPTH + 1) + "}")


class _Refused(Exception):
    """Raised inside json.loads hooks; turned into the caller's error."""


def _too_deep(text: str) -> bool:
    """True when brackets nest deeper than MAX_JSON_DEPTH (strings ignored).

    Peels the innermost pairs off, one level per pass, in C (re), so a 100 MB header costs
    at most MAX_JSON_DEPTH passes and no Python recursion.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if _OPENS.search(brackets):
        return True
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return False
        peeled = _INNERMOST.sub("", brackets)
        if peeled == brackets:
            return False  # unbalanced: json.loads says where
        brackets = peeled
    return bool(brackets) and _INNERMOST.search(brackets) is not None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} overflows")
    return value


def _parse_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} (not a JSON number)")


def parse_json(data: bytes | str, where: str, error: Callable[[str], Exception], fix: str) -> Any:
    """The JSON value in `data`, or `error("<where> ... ; <fix>")` naming what was wrong
    (`error` is the caller's LauncherError class: this module imports nothing of the launcher)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise error(f"{where} is not UTF-8 text; {fix}") from None
    if _too_deep(text):
        raise error(f"{where} nests deeper than {MAX_JSON_DEPTH} levels; {fix}")
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except _Refused as refused:
        raise error(f"{where} holds {refused}; {fix}") from None
    except json.JSONDecodeError as bad:
        raise error(f"{where} is not valid JSON ({bad.msg} at {bad.pos}); {fix}") from None
    except (RecursionError, ValueError) as bad:
        raise error(f"{where} is not usable JSON ({str(bad)[:80]}); {fix}") from None


def printable(text: object, limit: int | None = 400) -> str:
    """`text` with every control, format or separator character written as an escape
    (\\x1b, \\u202e), so that no string can move the cursor, recolour, reorder or split a
    line of output; cut to `limit` characters (None: whole)."""
    raw = str(text)
    limit = len(raw) if limit is None else limit
    cut = raw[:limit]
    if cut.isprintable():
        return cut + ("..." if len(raw) > limit else "")
    out = []
    for char in cut:
        if char.isprintable() and unicodedata.category(char) not in ("Cf", "Zl", "Zp"):
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out) + ("..." if len(raw) > limit else "")

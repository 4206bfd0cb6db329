"""Parsers for option values: each raises ValueError with a sentence that says what was expected.

The range-carrying ones (IntRange, IntListRange, OpenInterval, Choice) are data as well as
parsers: the chart's schema and the docs are rendered from their bounds.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Final

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 4096
HUGEPAGE_MODES: Final = ("off", "thp", "hugetlb")


def text(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError("contains a control character (newline, tab, NUL ...)")
    if len(value) > MAX_TEXT:
        raise ValueError(f"is longer than {MAX_TEXT} characters")
    return value.strip()


def path(value: str) -> str:
    cleaned = text(value)
    if not cleaned:
        raise ValueError("is empty; give a path")
    return cleaned


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def hugepage_mode(value: str) -> str:
    """off | thp | hugetlb; true/false keep their old meaning (require the pool / nothing)."""
    lowered = value.strip().lower()
    aliases = {"true": "hugetlb", "1": "hugetlb", "yes": "hugetlb", "on": "hugetlb",
               "false": "off", "0": "off", "no": "off"}  # fmt: skip
    mode = aliases.get(lowered, lowered)
    if mode not in HUGEPAGE_MODES:
        raise ValueError(
            "expected off, thp (transparent hugepages through glibc) or hugetlb (the reserved "
            "2 MiB pool through glibc); true means hugetlb, false off"
        )
    return mode


@dataclass(frozen=True)
class IntRange:
    """A whole number from `low` to `high`; the chart's schema takes the same bounds."""

    low: int
    high: int

    def __call__(self, value: str) -> int:
        stripped = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,12}", stripped):
            raise ValueError(f"expected a whole number from {self.low} to {self.high}")
        number = int(stripped)
        if not self.low <= number <= self.high:
            raise ValueError(f"expected a whole number from {self.low} to {self.high}")
        return number


def int_in(low: int, high: int) -> IntRange:
    return IntRange(low, high)


@dataclass(frozen=True)
class IntListRange:
    """A list of whole numbers, each from `low` to `high` (distinct when `unique`)."""

    low: int
    high: int
    unique: bool = False

    def __call__(self, value: str) -> tuple[int, ...]:
        single = IntRange(self.low, self.high)
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        if not parts:
            raise ValueError("expected a list of numbers such as '0,1'")
        numbers = tuple(single(p) for p in parts)
        if self.unique and len(set(numbers)) != len(numbers):
            raise ValueError("lists a number twice")
        return numbers


def int_list(low: int, high: int, unique: bool = False) -> IntListRange:
    return IntListRange(low, high, unique)


@dataclass(frozen=True)
class OpenInterval:
    """A number strictly between `low` and `high` (a fraction: 0 < x < 1)."""

    low: float
    high: float
    hint: str

    def __call__(self, value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected {self.hint}") from None
        if not self.low < number < self.high:
            raise ValueError(f"expected {self.hint}")
        return number


fraction: Final = OpenInterval(0.0, 1.0, "a fraction between 0 and 1, e.g. 0.85")


@dataclass(frozen=True)
class Choice:
    """One of `choices`, case-folded to upper or lower case."""

    choices: tuple[str, ...]
    upper: bool = False

    def __call__(self, value: str) -> str:
        normal = value.strip().upper() if self.upper else value.strip().lower()
        if normal not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}")
        return normal


def choice(choices: tuple[str, ...], upper: bool = False) -> Choice:
    return Choice(choices, upper)


def name(value: str) -> str:
    cleaned = text(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}", cleaned):
        raise ValueError("expected letters, digits and . _ : / @ + - (at most 200)")
    return cleaned


def backend(value: str) -> str:
    cleaned = value.strip()
    if not re.fullmatch(r"[a-z0-9_]{1,40}", cleaned):
        raise ValueError("expected an sglang backend name such as flashinfer or triton")
    return cleaned


def bind_address(value: str) -> str:
    cleaned = value.strip()
    try:
        ipaddress.ip_address(cleaned)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", cleaned):
            raise ValueError("expected an IP address or a host name") from None
    return cleaned


def host_port(value: str) -> str:
    cleaned = value.strip()
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):([0-9]{1,5})", cleaned)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535")
    return cleaned


def gpu_specs(value: str) -> tuple[str, ...]:
    from kthybrid_serve.host.gpus import parse_gpu_spec

    specs = tuple(part.strip() for part in value.split(";") if part.strip())
    if not specs:
        raise ValueError("expected 'NAME,MEMORY,CC', several separated by ';'")
    for index, spec in enumerate(specs):
        parse_gpu_spec(spec, index)
    return specs


def json_args(value: str) -> tuple[str, ...]:
    """A JSON array of strings: arguments travel as a list and are never re-split."""
    try:
        loaded = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(
            'expected a JSON array of strings, e.g. ["--log-level", "debug"]'
        ) from None
    if not isinstance(loaded, list) or not all(isinstance(a, str) for a in loaded):
        raise ValueError('expected a JSON array of strings, e.g. ["--log-level", "debug"]')
    for argument in loaded:
        text(argument)
    return tuple(loaded)

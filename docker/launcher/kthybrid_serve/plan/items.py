"""The pieces every part of a plan is made of: a value with its reason, a budget line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanItem:
    """One planned value, with the reason for it and where it came from."""

    name: str
    value: str
    reason: str
    source: str = "planned"


@dataclass(frozen=True)
class BudgetLine:
    label: str
    amount: int
    note: str = ""

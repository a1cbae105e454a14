"""The loaded, validated rules and the decision taken for one call. All immutable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rules.dialling import DiallingPlan


@dataclass(frozen=True, slots=True)
class NumberEntry:
    """One of the company's own numbers (E.164), the only numbers ever shown."""

    number: str
    name: str | None
    line: int


@dataclass(frozen=True, slots=True)
class Rule:
    """One advanced rule. `index` is 1-based, as people count rules in the file."""

    index: int
    prefix: str
    digits: str
    number: str
    line: int


# eq=False: equality of loaded files is what `version` is for, and the read-only mappings
# inside are not hashable, so the generated __eq__/__hash__ would only mislead.
@dataclass(frozen=True, eq=False, slots=True)
class Rules:
    source: str
    version: str
    country: str
    numbers: tuple[NumberEntry, ...]
    default_outgoing_number: str
    users: Mapping[str, str | None]
    """Every listed user: their own number, or None for `default`."""
    apply_to_users_with_own_number: bool
    rules: tuple[Rule, ...]
    warnings: tuple[str, ...]
    dialling: DiallingPlan
    names: Mapping[str, str | None]
    """Display name of every number in `numbers` (None when it has none)."""
    prefix_index: Mapping[str, Rule]
    """First rule for each distinct prefix (international digits), for per-call lookup."""
    longest_prefix: int

    @property
    def users_with_own_number(self) -> int:
        return sum(1 for number in self.users.values() if number is not None)


@dataclass(frozen=True, slots=True)
class Decision:
    """What one call shows, and why (`reason` names the resolution step and rule)."""

    number: str
    name: str | None
    reason: str

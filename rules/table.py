""" "Who shows what": every user against one example destination per rule, before applying."""

from __future__ import annotations

from dataclasses import dataclass

from rules.model import Decision, Rule, Rules
from rules.resolution import resolve

OTHER_DESTINATION_LABEL = "(other)"
OTHER_USERS_LABEL = "(other users)"
# Example destinations are padded to a typical international length so they read as numbers.
_EXAMPLE_DIGITS = 11


@dataclass(frozen=True, slots=True)
class Column:
    label: str
    destination: str


@dataclass(frozen=True, slots=True)
class Row:
    user: str
    decisions: tuple[Decision, ...]


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]


def example_destination(rule: Rule) -> str:
    return "+" + rule.digits.ljust(_EXAMPLE_DIGITS, "0")


def who_shows_what(rules: Rules) -> Table:
    """One row per listed user plus one for unlisted users; one column per rule, one per owned
    country code when local presence is on (labelled "+44 (local)"), plus "(other)".

    The "(other)" column resolves a destination that is not a phone number, which no prefix
    matches, so it shows what steps 1, 3 and 4 give any destination no rule covers.
    """
    columns = tuple(Column(rule.prefix, example_destination(rule)) for rule in rules.rules)
    columns += _country_columns(rules)
    columns += (Column(OTHER_DESTINATION_LABEL, ""),)
    # An empty user is never listed (load rejects it), so it stands for every unlisted user.
    users = [*((user, user) for user in rules.users), (OTHER_USERS_LABEL, "")]
    rows = tuple(
        Row(label, tuple(resolve(rules, user, column.destination) for column in columns))
        for label, user in users
    )
    return Table(columns, rows)


def _country_columns(rules: Rules) -> tuple[Column, ...]:
    if not rules.local_presence:
        return ()
    codes: dict[str, None] = {}
    for entry in rules.numbers:
        digits = entry.number[1:]
        # The shortest indexed prefix of a number is its country code.
        code = next(digits[:end] for end in range(1, 4) if digits[:end] in rules.presence_index)
        codes.setdefault(code)
    return tuple(
        Column(f"+{code} (local)", "+" + code.ljust(_EXAMPLE_DIGITS, "0")) for code in codes
    )

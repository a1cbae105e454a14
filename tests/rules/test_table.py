"""The explain table: every user against one example destination per rule, plus (other)."""

from __future__ import annotations

from pathlib import Path

import rules


def test_example_table_shows_who_shows_what(example_path: Path) -> None:
    table = rules.who_shows_what(rules.load(example_path))
    assert [(c.label, c.destination) for c in table.columns] == [
        ("0044", "+44000000000"),
        ("0033", "+33000000000"),
        ("(other)", ""),
    ]
    grid = {row.user: [d.number for d in row.decisions] for row in table.rows}
    assert grid == {
        "1001": ["+3228880001", "+3228880001", "+3228880001"],
        "1002": ["+442071234567", "+33144556677", "+3228880000"],
        "(other users)": ["+442071234567", "+33144556677", "+3228880000"],
    }


def test_each_example_destination_matches_its_own_rule(example_path: Path) -> None:
    loaded = rules.load(example_path)
    table = rules.who_shows_what(loaded)
    for rule, column in zip(loaded.rules, table.columns, strict=False):
        assert rules.matching_rule(loaded, column.destination) == rule
    assert rules.matching_rule(loaded, table.columns[-1].destination) is None

"""Successful loads: the immutable result, its version, and the warnings."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

import rules
from tests.rules.conftest import rules_text


def test_example_loads(example_path: Path) -> None:
    r = rules.load(example_path)
    assert r.country == "BE"
    assert [entry.number for entry in r.numbers] == [
        "+3228880000",
        "+3228880001",
        "+442071234567",
        "+33144556677",
    ]
    assert r.names["+442071234567"] == "ACME UK"
    assert r.default_outgoing_number == "+3228880000"
    assert dict(r.users) == {"1001": "+3228880001", "1002": None}
    assert r.apply_to_users_with_own_number is False
    assert [(rule.index, rule.prefix, rule.digits, rule.number) for rule in r.rules] == [
        (1, "0044", "44", "+442071234567"),
        (2, "0033", "33", "+33144556677"),
    ]
    assert r.warnings == ()
    assert r.source == str(example_path)


def test_version_is_a_short_hash_of_the_file_bytes(example_path: Path) -> None:
    data = example_path.read_bytes()
    r = rules.load(example_path)
    assert r.version == hashlib.sha256(data).hexdigest()[:12]
    assert rules.loads(data.decode()).version == r.version
    assert rules.loads(data.decode() + "# edited\n").version != r.version


def test_rules_are_immutable(example_path: Path) -> None:
    r = rules.load(example_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.default_outgoing_number = "+3228880001"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.users["1003"] = "+3228880001"  # type: ignore[index]
    with pytest.raises(TypeError):
        r.prefix_index["44"] = r.rules[1]  # type: ignore[index]
    assert isinstance(r.rules, tuple) and isinstance(r.numbers, tuple)


def test_optional_sections_may_be_missing_or_empty() -> None:
    minimal = (
        'country: "GB"\nnumbers: ["+442071234567"]\ndefault_outgoing_number: "+442071234567"\n'
    )
    r = rules.loads(minimal)
    assert (dict(r.users), r.rules, r.apply_to_users_with_own_number) == ({}, (), False)
    r = rules.loads(minimal + "users:\nadvanced_rules:\n")
    assert (dict(r.users), r.rules) == ({}, ())
    r = rules.loads(minimal + "advanced_rules:\n  rules: []\n")
    assert r.rules == ()


def test_yaml_booleans_of_every_spelling_set_the_switch() -> None:
    for spelling in ("true", "True", "yes", "on"):
        text = rules_text().replace(
            "apply_to_users_with_own_number: false", f"apply_to_users_with_own_number: {spelling}"
        )
        assert rules.loads(text).apply_to_users_with_own_number is True


def rules_of(*pairs: tuple[str, str]) -> str:
    return "".join(f'    - destination_prefix: "{p}"\n      number: "{n}"\n' for p, n in pairs)


def test_shadowed_rule_is_a_warning_not_an_error() -> None:
    text = rules_text(rules_yaml=rules_of(("0044", "+442071234567"), ("004420", "+33144556677")))
    r = rules.loads(text, "f.yaml")
    assert r.warnings == (
        "f.yaml:18: rule #2 (destination_prefix '004420') can never match: rule #1 "
        "(destination_prefix '0044', line 16) matches every such destination first",
    )
    # It still loads, and the earlier rule is the one that matches.
    assert rules.resolve(r, "1002", "+442079460000").number == "+442071234567"


def test_same_prefix_written_differently_is_shadowed() -> None:
    text = rules_text(rules_yaml=rules_of(("+44", "+442071234567"), ("0044", "+33144556677")))
    (warning,) = rules.loads(text, "f.yaml").warnings
    assert warning.startswith("f.yaml:18: rule #2 (destination_prefix '0044') can never match")


def test_duplicate_rule_is_a_warning() -> None:
    text = rules_text(
        rules_yaml=rules_of(
            ("0044", "+442071234567"), ("0033", "+33144556677"), ("0044", "+442071234567")
        )
    )
    assert rules.loads(text, "f.yaml").warnings == (
        "f.yaml:20: duplicate rule: rule #3 (destination_prefix '0044') repeats rule #1 (line 16)",
    )


def test_longer_prefix_before_shorter_is_fine() -> None:
    text = rules_text(rules_yaml=rules_of(("004420", "+33144556677"), ("0044", "+442071234567")))
    assert rules.loads(text).warnings == ()


def test_warnings_survive_a_failed_load() -> None:
    text = (
        rules_text(rules_yaml=rules_of(("0044", "+442071234567"), ("004420", "+442071234567")))
        + "colour: blue\n"
    )
    with pytest.raises(rules.RulesError) as caught:
        rules.loads(text, "f.yaml")
    assert len(caught.value.errors) == 1
    assert len(caught.value.warnings) == 1
    assert "can never match" in caught.value.warnings[0]

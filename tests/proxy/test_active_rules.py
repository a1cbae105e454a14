"""ActiveRules: the rules in force, swapped whole on reload; a bad file leaves the old ones."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import rules
from proxy.active_rules import ActiveRules

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    shutil.copyfile(EXAMPLE, path)
    return path


def edited(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("user", "destination", "number", "name"),
    [
        ("1001", "00442079460000", "+3228880001", None),  # own number wins (switch off)
        ("1002", "00442079460000", "+442071234567", "ACME UK"),  # advanced rule
        ("1002", "0033144000000", "+33144556677", None),
        ("1002", "025551234", "+3228880000", None),  # default
        ("9999", "025551234", "+3228880000", None),  # unknown user: default
    ],
)
def test_decisions_of_the_example(user: str, destination: str, number: str,
                                  name: str | None) -> None:
    active = ActiveRules.load(EXAMPLE)
    decision = active.decide(user, destination)
    assert (decision.number, decision.name) == (number, name)
    assert decision.rules_version == active.current.version
    assert decision.reason


def test_reload_swaps_to_the_new_file(rules_file: Path) -> None:
    active = ActiveRules.load(rules_file)
    before = active.current
    assert active.decide("1002", "025551234").number == "+3228880000"
    edited(rules_file, 'default_outgoing_number: "+3228880000"',
           'default_outgoing_number: "+33144556677"')
    outcome = active.reload()
    assert outcome.ok
    assert outcome.errors == ()
    assert outcome.version == active.current.version != before.version
    decision = active.decide("1002", "025551234")
    assert (decision.number, decision.rules_version) == ("+33144556677", outcome.version)
    # the old object is untouched: whoever still holds it decides as before
    assert rules.resolve(before, "1002", "025551234").number == "+3228880000"


def test_reload_of_an_unchanged_file_keeps_the_version(rules_file: Path) -> None:
    active = ActiveRules.load(rules_file)
    version = active.current.version
    outcome = active.reload()
    assert (outcome.ok, outcome.version) == (True, version)


@pytest.mark.parametrize(
    "broken",
    [
        "numbers: [\n",  # not YAML
        "country: BE\n",  # YAML, not valid rules
        'country: BE\nnumbers: ["+3228880000"]\ndefault_outgoing_number: "+15555550100"\n',
        "",
    ],
    ids=["yaml-syntax", "missing-fields", "default-not-a-company-number", "empty"],
)
def test_invalid_file_keeps_the_old_rules_and_returns_its_errors(
    rules_file: Path, broken: str
) -> None:
    active = ActiveRules.load(rules_file)
    before = active.current
    rules_file.write_text(broken)
    outcome = active.reload()
    assert not outcome.ok
    assert outcome.version is None
    assert outcome.errors
    with pytest.raises(rules.RulesError) as raised:
        rules.load(rules_file)
    assert outcome.errors == tuple(raised.value.errors)
    assert all(str(rules_file) in error for error in outcome.errors)
    assert active.current is before
    assert active.decide("1002", "00442079460000").rules_version == before.version


def test_missing_file_keeps_the_old_rules(rules_file: Path) -> None:
    active = ActiveRules.load(rules_file)
    before = active.current
    rules_file.unlink()
    outcome = active.reload()
    assert not outcome.ok and outcome.errors
    assert str(rules_file) in outcome.errors[0]
    assert active.current is before


def test_a_fixed_file_reloads_after_a_refused_one(rules_file: Path) -> None:
    active = ActiveRules.load(rules_file)
    good = rules_file.read_text()
    rules_file.write_text("numbers: [\n")
    assert not active.reload().ok
    rules_file.write_text(good.replace('"1001": "+3228880001"', '"1001": "+33144556677"'))
    outcome = active.reload()
    assert outcome.ok
    assert active.decide("1001", "025551234").number == "+33144556677"


def test_a_decision_uses_one_rules_object_even_if_a_reload_lands_during_it(
    rules_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap is atomic for a call: number and version come from the same rules."""
    active = ActiveRules.load(rules_file)
    old_version = active.current.version
    edited(rules_file, 'default_outgoing_number: "+3228880000"',
           'default_outgoing_number: "+33144556677"')
    real_resolve = rules.resolve
    reloaded: list[bool] = []

    def resolve_with_a_reload_in_between(
        current: rules.Rules, user: str, destination: str, **options: Any
    ) -> rules.Decision:
        if not reloaded:
            reloaded.append(active.reload().ok)
        return real_resolve(current, user, destination, **options)

    monkeypatch.setattr(rules, "resolve", resolve_with_a_reload_in_between)
    decision = active.decide("1002", "025551234")
    assert reloaded == [True]
    assert (decision.number, decision.rules_version) == ("+3228880000", old_version)
    after = active.decide("1002", "025551234")
    assert after.number == "+33144556677"
    assert after.rules_version == active.current.version != old_version


def test_load_of_an_invalid_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("country: BE\n")
    with pytest.raises(rules.RulesError):
        ActiveRules.load(path)

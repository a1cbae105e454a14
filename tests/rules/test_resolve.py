"""Table-driven resolution: the four steps, the switch, rule order and every dialled form."""

from __future__ import annotations

from pathlib import Path

import pytest

import rules
from tests.rules.conftest import rules_text

BE_DEFAULT = "+3228880000"
OWN_1001 = "+3228880001"
UK = "+442071234567"
FR = "+33144556677"

UK_DIALLED = [
    "0044 20 7946 0000",
    "+442079460000",
    "00442079460000",
    "tel:+44-20-7946-0000",
    "sip:+442079460000@trunk.example.com",
]
FR_DIALLED = ["0033 1 44 55 66 00", "+33144556600", "tel:+33-1-44-55-66-00", "0033144556600"]
BE_DIALLED = ["02 888 12 34", "+3228881234", "0032 2 888 12 34", "0470 12 34 56"]
# 112 is an emergency call (tests/rules/test_emergency.py); 116000 is a short code that is not.
NOT_NUMBERS = ["sip:alice@example.com", "alice", "116000", "1003", "*43", ""]


def load(**kwargs: object) -> rules.Rules:
    return rules.loads(rules_text(**kwargs), "test.yaml")  # type: ignore[arg-type]


# (switch, user, destination, number, step): steps are the reason's first words.
CASES: list[tuple[bool, str, str, str, str]] = [
    # Step 1: own number wins while the switch is off, whatever is dialled.
    *[(False, "1001", d, OWN_1001, "step 1") for d in UK_DIALLED + FR_DIALLED + BE_DIALLED],
    *[(False, "1001", d, OWN_1001, "step 1") for d in NOT_NUMBERS],
    # Step 2 for default and unknown users, switch off or on.
    *[(s, u, d, UK, "step 2") for s in (False, True) for u in ("1002", "7777") for d in UK_DIALLED],
    *[(s, u, d, FR, "step 2") for s in (False, True) for u in ("1002", "7777") for d in FR_DIALLED],
    # Step 2 also for users with their own number once the switch is on.
    *[(True, "1001", d, UK, "step 2") for d in UK_DIALLED],
    *[(True, "1001", d, FR, "step 2") for d in FR_DIALLED],
    # Step 3: switch on, nothing matches, own number.
    *[(True, "1001", d, OWN_1001, "step 3") for d in BE_DIALLED + NOT_NUMBERS],
    # Step 4: default or unknown user, nothing matches.
    *[
        (s, u, d, BE_DEFAULT, "step 4")
        for s in (False, True)
        for u in ("1002", "7777", "")
        for d in BE_DIALLED + NOT_NUMBERS
    ],
]


@pytest.mark.parametrize(("switch", "user", "destination", "number", "step"), CASES)
def test_resolution_steps(
    switch: bool, user: str, destination: str, number: str, step: str
) -> None:
    decision = rules.resolve(load(switch=switch), user, destination)
    assert (decision.number, decision.reason.split(":")[0]) == (number, step)


def test_names_come_from_numbers() -> None:
    r = load()
    assert rules.resolve(r, "1002", "+442079460000").name == "ACME UK"
    assert rules.resolve(r, "1002", "+33144556600").name is None


def test_reason_names_the_rule_index_prefix_and_line() -> None:
    decision = rules.resolve(load(), "1002", "0033 1 44 55 66 00")
    assert decision.reason == (
        "step 2: advanced rule #2 (destination_prefix '0033', line 18) "
        "matches destination '0033 1 44 55 66 00'"
    )


def rules_block(*rules_list: tuple[str, str]) -> str:
    return "".join(
        f'    - destination_prefix: "{prefix}"\n      number: "{number}"\n'
        for prefix, number in rules_list
    )


@pytest.mark.parametrize(
    ("ordered", "destination", "number"),
    [
        # Shorter prefix first: it wins even where the longer one also matches.
        ([("0044", UK), ("004420", FR)], "+442079460000", UK),
        # Longer prefix first: it wins where it matches, the shorter catches the rest.
        ([("004420", FR), ("0044", UK)], "+442079460000", FR),
        ([("004420", FR), ("0044", UK)], "+441612345678", UK),
        # The same prefix written two ways is one prefix: the first rule wins.
        ([("+44", FR), ("0044", UK)], "+442079460000", FR),
        ([("0044", UK), ("+44", FR)], "+442079460000", UK),
    ],
)
def test_first_matching_rule_wins(
    ordered: list[tuple[str, str]], destination: str, number: str
) -> None:
    decision = rules.resolve(load(rules_yaml=rules_block(*ordered)), "1002", destination)
    assert decision.number == number


def test_rule_order_is_file_order_not_prefix_length() -> None:
    rules_yaml = (
        '    - destination_prefix: "+4420"\n      number: "+33144556677"\n'
        '    - destination_prefix: "+44"\n      number: "+442071234567"\n'
    )
    r = load(rules_yaml=rules_yaml)
    assert rules.resolve(r, "1002", "00442079460000").number == FR
    assert rules.resolve(r, "1002", "00441612345678").number == UK


@pytest.mark.parametrize("dialled", [*UK_DIALLED, "020 7946 0000", "(020) 7946-0000"])
@pytest.mark.parametrize("prefix", ["0044", "+44", "00 44"])
def test_gb_country_every_uk_form_matches_the_uk_rule(dialled: str, prefix: str) -> None:
    rules_yaml = f'    - destination_prefix: "{prefix}"\n      number: "+442071234567"\n'
    r = load(country="GB", rules_yaml=rules_yaml)
    decision = rules.resolve(r, "1002", dialled)
    assert decision.number == UK, decision.reason


@pytest.mark.parametrize("country", ["BE", "FR"])
@pytest.mark.parametrize("dialled", UK_DIALLED)
def test_be_and_fr_countries_match_international_uk_forms(country: str, dialled: str) -> None:
    decision = rules.resolve(load(country=country), "1002", dialled)
    assert decision.number == UK


def test_national_numbers_are_read_in_the_files_country() -> None:
    rules_yaml = '    - destination_prefix: "+33"\n      number: "+33144556677"\n'
    in_france = load(country="FR", rules_yaml=rules_yaml)
    in_belgium = load(country="BE", rules_yaml=rules_yaml)
    assert rules.resolve(in_france, "1002", "01 44 55 66 00").number == FR
    assert rules.resolve(in_belgium, "1002", "01 44 55 66 00").number == BE_DEFAULT


@pytest.mark.parametrize("dialled", [*NOT_NUMBERS, "sip:bob@10.0.0.1:5060", "tel:abc"])
def test_non_numeric_destinations_match_no_rule(dialled: str) -> None:
    r = load()
    assert rules.matching_rule(r, dialled) is None
    assert rules.resolve(r, "1002", dialled).reason.startswith("step 4:")


def test_unknown_user_is_a_default_user() -> None:
    r = load()
    listed = rules.resolve(r, "1002", "02 888 12 34")
    unknown = rules.resolve(r, "9999", "02 888 12 34")
    assert listed.number == unknown.number == BE_DEFAULT
    assert "listed as default" in listed.reason
    assert "is not listed" in unknown.reason


def test_no_rules_at_all() -> None:
    r = load(rules_yaml="")
    assert rules.resolve(r, "1002", "+442079460000").number == BE_DEFAULT
    assert rules.resolve(r, "1001", "+442079460000").number == OWN_1001


def test_example_file_done_means(example_path: Path) -> None:
    """The issue's "Done means" expectations, on the shipped example."""
    r = rules.load(example_path)
    assert rules.resolve(r, "1001", "00441234567890").number == OWN_1001
    assert rules.resolve(r, "1002", "+33123456789").number == FR
    for user, expected in (("1001", OWN_1001), ("1002", BE_DEFAULT), ("4242", BE_DEFAULT)):
        for dialled in BE_DIALLED:
            assert rules.resolve(r, user, dialled).number == expected
    switched = rules.loads(
        example_path.read_text().replace(
            "apply_to_users_with_own_number: false", "apply_to_users_with_own_number: true"
        )
    )
    assert switched.apply_to_users_with_own_number
    assert rules.resolve(switched, "1001", "00441234567890").number == UK

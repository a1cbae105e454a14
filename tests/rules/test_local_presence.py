"""Local presence: the owned number sharing the most leading digits with the destination."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rules
from tests.rules.features import (
    BE_DIRECT,
    BE_MAIN,
    FR_PARIS,
    UK_LONDON,
    UK_MANCHESTER,
    US_NY,
    load_features,
)

RULE_0044 = '  rules:\n    - destination_prefix: "0044"\n      number: "+441612345678"\n'


@pytest.mark.parametrize(
    ("destination", "number", "shared"),
    [
        ("00442079460000", UK_LONDON, "+44207"),  # London area code
        ("+441619460000", UK_MANCHESTER, "+44161"),  # Manchester area code
        ("+441519460000", UK_MANCHESTER, "+441"),  # +441 beats the +44 of London
        ("+443069990000", UK_LONDON, "+44"),  # only the country code: first +44 number
        ("0033 1 23 45 67 89", FR_PARIS, "+331"),
        ("+12125550199", US_NY, "+121255501"),
        ("02 888 12 34", BE_MAIN, "+322888"),  # national, read in BE
        ("+3228880001", BE_DIRECT, "+3228880001"),  # the number itself
    ],
)
def test_the_longest_shared_prefix_wins(destination: str, number: str, shared: str) -> None:
    decision = rules.resolve(load_features(), "1002", destination)
    assert (decision.number, decision.step) == (number, "local presence")
    assert decision.reason.startswith(f"local presence: {number} shares {shared} with")


@pytest.mark.parametrize("destination", ["+4915112345678", "sip:bob@example.com", "1003"])
def test_no_shared_country_code_falls_back_to_the_default(destination: str) -> None:
    decision = rules.resolve(load_features(), "1002", destination)
    assert (decision.number, decision.step) == (BE_MAIN, "step 4")


def test_off_by_default() -> None:
    decision = rules.resolve(load_features(advanced=""), "1002", "+442079460000")
    assert (decision.number, decision.step) == (BE_MAIN, "step 4")


def test_explicit_rules_keep_precedence() -> None:
    r = load_features(advanced="  local_presence: true\n" + RULE_0044)
    decision = rules.resolve(r, "1002", "+442079460000")
    assert (decision.number, decision.step, decision.rule) == (UK_MANCHESTER, "step 2", 1)
    assert rules.resolve(r, "1002", "+33123456789").number == FR_PARIS


@pytest.mark.parametrize(
    ("switch", "number", "step"),
    [("false", BE_DIRECT, "step 1"), ("true", UK_LONDON, "local presence")],
)
def test_the_switch_keeps_its_meaning(switch: str, number: str, step: str) -> None:
    advanced = f"  apply_to_users_with_own_number: {switch}\n  local_presence: true\n"
    decision = rules.resolve(load_features(advanced=advanced), "1001", "+442079460000")
    assert (decision.number, decision.step) == (number, step)


def test_own_number_after_local_presence_when_nothing_is_local() -> None:
    advanced = "  apply_to_users_with_own_number: true\n  local_presence: true\n"
    decision = rules.resolve(load_features(advanced=advanced), "1001", "+4915112345678")
    assert (decision.number, decision.step) == (BE_DIRECT, "step 3")


def test_local_presence_must_be_a_boolean() -> None:
    with pytest.raises(rules.RulesError) as caught:
        load_features(advanced='  local_presence: "yes"\n')
    assert caught.value.errors == (
        "f.yaml:15: local_presence must be true or false, got a string",
    )


def _shared(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


LOADED = load_features()
OWNED = [entry.number for entry in LOADED.numbers]
COUNTRY_CODES = {"32": 2, "44": 2, "33": 2, "1": 1}


@given(
    st.sampled_from(["32", "44", "33", "1", "49", "7"]),
    st.text(alphabet="0123456789", min_size=6, max_size=10),
)
def test_property_the_choice_shares_the_most_digits_and_ties_go_first(
    country: str, rest: str
) -> None:
    digits = country + rest
    decision = rules.resolve(LOADED, "1002", "+" + digits)
    best = max(_shared(number[1:], digits) for number in OWNED)
    if country not in COUNTRY_CODES:
        assert decision.number == BE_MAIN and decision.step == "step 4"
        return
    assert decision.step == "local presence"
    first_best = next(n for n in OWNED if _shared(n[1:], digits) == best)
    assert decision.number == first_best
    assert best >= COUNTRY_CODES[country]

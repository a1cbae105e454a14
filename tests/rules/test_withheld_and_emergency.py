"""Withheld caller ID (RFC 3323) and emergency calls, which are never withheld."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rules
from tests.rules.features import BE_DIRECT, BE_MAIN, FR_PARIS, UK_LONDON, load_features

USERS = (
    '  "1001": "+3228880001"\n'
    '  "1002": default\n'
    '  "1003": anonymous\n'
    '  "1004": {number: "+3228880001", withheld: true}\n'
    '  "1005": {number: anonymous, name: "Night shift"}\n'
)
ANONYMOUS_RULE = (
    "  local_presence: true\n"
    "  rules:\n"
    '    - destination_prefix: "+33"\n'
    "      number: anonymous\n"
)


def load(**kwargs: str) -> rules.Rules:
    return load_features(users=USERS, **kwargs)


@pytest.mark.parametrize(
    ("user", "destination", "number", "step"),
    [
        ("1003", "+442079460000", UK_LONDON, "local presence"),
        ("1003", "02 555 12 34", BE_MAIN, "local presence"),
        ("1004", "+442079460000", BE_DIRECT, "step 1"),
        ("1005", "+4915112345678", BE_MAIN, "step 4"),
    ],
)
def test_withheld_users_carry_the_number_they_would_show(
    user: str, destination: str, number: str, step: str
) -> None:
    decision = rules.resolve(load(), user, destination)
    assert (decision.number, decision.step, decision.privacy) == (number, step, "id")
    assert f"withheld: user '{user}' is withheld (anonymous)" in decision.reason
    assert decision.reason.endswith(f"P-Asserted-Identity carries {number}")


def test_a_withheld_user_has_no_own_number() -> None:
    r = load()
    assert r.users["1003"] is None and "1003" in r.withheld_users
    assert r.users["1004"] == BE_DIRECT and "1004" in r.withheld_users


def test_a_rule_can_withhold_and_pai_carries_what_the_later_steps_give() -> None:
    r = load(advanced=ANONYMOUS_RULE)
    decision = rules.resolve(r, "1002", "+33123456789")
    assert (decision.number, decision.step, decision.rule, decision.privacy) == (
        FR_PARIS,
        "step 2",
        1,
        "id",
    )
    assert "withholds the caller ID; P-Asserted-Identity carries +33144556677 (local presence" in (
        decision.reason
    )
    assert rules.resolve(r, "1002", "+442079460000").privacy is None


def test_privacy_id_from_the_pbx_withholds_any_call() -> None:
    decision = rules.resolve(load(), "1001", "+442079460000", privacy_requested=True)
    assert (decision.number, decision.privacy) == (BE_DIRECT, "id")
    assert "withheld: the INVITE asks for Privacy: id" in decision.reason


@pytest.mark.parametrize("dialled", ["112", "101", "100", "tel:112", "sip:112@pbx", "1 1 2"])
@pytest.mark.parametrize(
    ("user", "number"),
    [
        ("1001", BE_DIRECT),
        ("1002", BE_MAIN),
        ("1003", BE_MAIN),
        ("1004", BE_DIRECT),
        ("x", BE_MAIN),
    ],
)
def test_emergency_calls_show_a_number_and_are_never_withheld(
    dialled: str, user: str, number: str
) -> None:
    for requested in (False, True):
        decision = rules.resolve(load(), user, dialled, privacy_requested=requested)
        assert (decision.number, decision.step, decision.privacy) == (number, "emergency", None)
        assert "never withheld" in decision.reason


def test_emergency_number_replaces_the_default_but_not_own_numbers() -> None:
    r = load(extra='emergency_number: "+3228880001"\n')
    assert rules.resolve(r, "1002", "112").number == BE_DIRECT
    r = load(extra='emergency_number: "+442071234567"\n')
    assert rules.resolve(r, "1002", "112").number == UK_LONDON
    assert rules.resolve(r, "1001", "112").number == BE_DIRECT


@pytest.mark.parametrize(
    ("country", "emergency", "not_emergency"),
    [
        ("GB", ["999", "112"], ["998", "0999"]),
        ("US", ["911", "112"], ["912"]),
        ("FR", ["15", "17", "18", "112"], ["16", "19"]),
        ("BE", ["112", "100", "101"], ["102", "1120", "+32112"]),
    ],
)
def test_emergency_numbers_come_from_the_countrys_metadata(
    country: str, emergency: list[str], not_emergency: list[str]
) -> None:
    r = load(country=country)
    for dialled in emergency:
        assert rules.resolve(r, "1002", dialled).step == "emergency", dialled
    for dialled in not_emergency:
        assert rules.resolve(r, "1002", dialled).step != "emergency", dialled


def test_listed_emergency_numbers_and_the_outside_line_prefix() -> None:
    r = load(extra='emergency_numbers: ["116117"]\noutside_line_prefix: "0"\n')
    for dialled in ("116117", "0116117", "0112", "0 112", "112"):
        assert rules.resolve(r, "1003", dialled).step == "emergency", dialled
    assert rules.resolve(load(), "1003", "0112").step != "emergency"


def test_the_outside_line_prefix_also_applies_to_rules_and_local_presence() -> None:
    r = load(extra='outside_line_prefix: "9"\n', country="US")
    assert rules.resolve(r, "1002", "9 011 44 20 7946 0000").number == UK_LONDON
    assert rules.resolve(r, "1002", "9911").step == "emergency"
    # Without the prefix the number is read as dialled.
    assert rules.resolve(r, "1002", "011 44 20 7946 0000").number == UK_LONDON


@given(
    st.sampled_from(["1001", "1002", "1003", "1004", "1005", "nobody", "+3228880001"]),
    st.sampled_from(["112", "101", "100", "0112", "tel:112"]),
    st.booleans(),
)
def test_property_emergency_is_never_withheld_and_shows_an_owned_number(
    user: str, dialled: str, requested: bool
) -> None:
    r = LOADED
    decision = rules.resolve(r, user, dialled, privacy_requested=requested)
    assert decision.privacy is None
    assert decision.number in {entry.number for entry in r.numbers}
    assert decision.step == "emergency"


LOADED = load(advanced=ANONYMOUS_RULE, extra='outside_line_prefix: "0"\n')


@given(
    st.sampled_from(["1001", "1002", "1003", "1004", "1005", "nobody"]),
    st.sampled_from(["+33123456789", "+442079460000", "02 555 12 34", "sip:x@y", "+4915112345678"]),
    st.booleans(),
)
def test_property_withheld_exactly_when_asked_and_pai_is_what_would_show(
    user: str, destination: str, requested: bool
) -> None:
    decision = rules.resolve(LOADED, user, destination, privacy_requested=requested)
    # The anonymous rule (+33) applies unless step 1 keeps a user's own number first.
    by_rule = destination.startswith("+33") and LOADED.users.get(user) is None
    expected = user in LOADED.withheld_users or by_rule or requested
    assert (decision.privacy == "id") == expected
    shown = rules.resolve(LOADED_WITHOUT_PRIVACY, user, destination)
    assert decision.number == shown.number
    assert shown.privacy is None


LOADED_WITHOUT_PRIVACY = load_features(
    users=USERS.replace("anonymous", "default").replace("withheld: true", "withheld: false"),
    extra='outside_line_prefix: "0"\n',
)

"""user_source, display names, trunk number formats and the validation of every new setting."""

from __future__ import annotations

import pytest

import rules
from tests.rules.features import BE_DIRECT, BE_MAIN, UK_LONDON, features_text, load_features


@pytest.mark.parametrize(
    ("found", "user", "place"),
    [
        ({"from": "+3228880000", "p-preferred-identity": "1001"}, "1001", "p-preferred-identity"),
        ({"from": "1002", "x-extension": "1001"}, "1001", "x-extension"),
        ({"from": "1002"}, "1002", "from"),
        ({}, "", "from"),
    ],
)
def test_the_first_place_found_wins(found: dict[str, str], user: str, place: str) -> None:
    r = load_features(extra="user_source: [P-Preferred-Identity, x-extension, from]\n")
    assert rules.find_user(r, found.get) == (user, place)


def test_without_user_source_the_user_is_froms() -> None:
    r = load_features()
    assert r.user_source == ("from",)
    assert rules.find_user(r, {"from": "1001", "contact": "1002"}.get) == ("1001", "from")


def test_the_reason_names_where_the_user_was_found() -> None:
    decision = rules.resolve(load_features(), "1001", "+4915112345678", found_in="contact")
    assert decision.reason.endswith("; user '1001' read from contact")


@pytest.mark.parametrize("user", ["+3228880001", "3228880001", "028880001"])
def test_a_user_part_that_is_a_company_number_is_that_users_own_number(user: str) -> None:
    decision = rules.resolve(load_features(), user, "+442079460000")
    assert (decision.number, decision.step) == (BE_DIRECT, "step 1")
    assert "is the company's number +3228880001 (chosen by the PBX)" in decision.reason


def test_a_company_number_listed_under_users_follows_its_entry() -> None:
    r = load_features(users='  "+3228880001": anonymous\n')
    decision = rules.resolve(r, "+3228880001", "+442079460000")
    assert (decision.number, decision.privacy) == (UK_LONDON, "id")


@pytest.mark.parametrize(
    ("users", "extra", "user", "pbx_name", "name"),
    [
        ('  "1001": {number: "+3228880001", name: "ACME Sales"}\n', "", "1001", None, "ACME Sales"),
        ('  "1001": {name: "ACME Sales"}\n', "", "1001", None, "ACME Sales"),
        ('  "1001": default\n', "", "1001", None, "ACME London"),  # the number's name
        ('  "1001": default\n', "keep_pbx_display_name: true\n", "1001", "Alice", "Alice"),
        ('  "1001": {name: "S"}\n', "keep_pbx_display_name: true\n", "1001", None, "S"),
    ],
)
def test_display_names(
    users: str, extra: str, user: str, pbx_name: str | None, name: str
) -> None:
    r = load_features(users=users, extra=extra)
    assert rules.resolve(r, user, "+442079460000", pbx_name=pbx_name).name == name


TRUNKS = (
    "trunks:\n"
    "  default: {number_format: e164_no_plus}\n"
    '  "2": {number_format: national, host: "sip.provider.example"}\n'
    '  "3": {number_format: international_prefix, host: pbx}\n'
)


def test_trunk_formats_are_precomputed_per_number() -> None:
    r = load_features(extra=TRUNKS)
    assert dict(r.formatted[UK_LONDON]) == {
        "e164": "+442071234567",
        "e164_no_plus": "442071234567",
        "national": "02071234567",
        "international_prefix": "00442071234567",
    }
    assert r.formatted[BE_MAIN]["national"] == "028880000"
    assert r.formatted["+12125550100"]["national"] == "2125550100"
    assert (r.trunk_format(1).number_format, r.trunk_format(1).host) == ("e164_no_plus", "trunk")
    assert (r.trunk_format(2).number_format, r.trunk_format(2).host) == (
        "national",
        "sip.provider.example",
    )
    assert r.trunk_format(3).host == "pbx"


def test_international_prefix_follows_the_country() -> None:
    r = load_features(extra=TRUNKS, country="US")
    assert r.formatted[UK_LONDON]["international_prefix"] == "011442071234567"


HEAD = features_text()
LINE = HEAD.count("\n") + 1


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("user_source: from\n", 0, "user_source must be a non-empty list, got a string"),
        ("user_source: []\n", 0, "user_source is an empty list: leave it out instead"),
        ('user_source: ["x ext"]\n', 0, "user_source 'x ext' is not one of from, "),
        ("user_source: [from, From]\n", 0, "user_source lists 'from' twice (first at line"),
        ("keep_pbx_display_name: 1\n", 0, "keep_pbx_display_name must be true or false"),
        ("emergency_numbers: [112]\n", 0, "emergency_numbers: unquoted 112 is read by YAML"),
        ('emergency_numbers: ["11a"]\n', 0, "emergency_numbers: '11a' must be 2 to 15 digits"),
        ('emergency_number: "+3228889999"\n', 0, "emergency_number: +3228889999 is not in numbers"),
        ('outside_line_prefix: "+9"\n', 0, "outside_line_prefix '+9' must be 1 to 3 digits"),
        ("outside_line_prefix: 9\n", 0, "outside_line_prefix: unquoted 9 is read by YAML"),
        ("trunks: [1]\n", 0, "trunks must be a mapping, got a list"),
        ('trunks:\n  "0": {}\n', 1, "trunks key '0' must be default or a trunk's position"),
        ("trunks:\n  first: {}\n", 1, "trunks key 'first' must be default or a trunk's position"),
        ("trunks:\n  default: {number_format: e.164}\n", 1,
         "trunk default number_format 'e.164' is not one of e164, e164_no_plus, national, "),
        ("trunks:\n  default: {format: national}\n", 1, "unknown key 'format' in trunk default"),
        ('trunks:\n  default: {host: "a b"}\n', 1, "trunk default host 'a b' must be trunk, pbx"),
        ('trunks:\n  default: {host: "x\\r\\nTo: y"}\n', 1, "trunk default host "),
    ],
)
def test_new_settings_are_validated_with_their_line(extra: str, line: int, message: str) -> None:
    with pytest.raises(rules.RulesError) as caught:
        rules.loads(HEAD + extra, "f.yaml")
    (error,) = caught.value.errors
    assert error.startswith(f"f.yaml:{LINE + line}: {message}"), error


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ('  "1001": Anonymous\n', "user '1001': write anonymous in lower case, not Anonymous"),
        ('  "1001": {number: "+3200"}\n', "user '1001': '+3200' is not a valid E.164 number"),
        ('  "1001": {withheld: "yes"}\n', "withheld must be true or false, got a string"),
        ('  "1001": {name: "a<b"}\n', "name 'a<b' contains the character '<'"),
        ('  "1001": {nmae: "A"}\n', "unknown key 'nmae' in user '1001'"),
    ],
)
def test_user_entries_are_validated(users: str, message: str) -> None:
    with pytest.raises(rules.RulesError) as caught:
        load_features(users=users)
    (error,) = caught.value.errors
    assert error.startswith(f"f.yaml:12: {message}"), error


def test_a_korean_file_cannot_use_international_prefix() -> None:
    with pytest.raises(rules.RulesError) as caught:
        load_features(
            country="KR", extra="trunks:\n  default: {number_format: international_prefix}\n"
        )
    assert "KR has several international prefixes" in caught.value.errors[0]


def test_emergency_warning_for_a_foreign_number() -> None:
    r = load_features(users='  "1001": "+442071234567"\n')
    (warning,) = r.warnings
    assert warning.startswith("f.yaml:5: emergency calls of 1001 would show +442071234567")
    assert "not a number of BE (+32)" in warning
    fixed = load_features(users='  "1001": {number: "+442071234567"}\n')
    assert fixed.warnings == r.warnings
    assert not load_features().warnings


def test_emergency_warning_for_a_foreign_default_fallback() -> None:
    r = load_features(extra='emergency_number: "+33144556677"\n')
    assert any("emergency calls of 1002, (other users) would show +33144556677" in w
               for w in r.warnings)

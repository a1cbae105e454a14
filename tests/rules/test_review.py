"""Defects found in review: each test failed before its fix."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rules
from rules.dialling import DiallingPlan
from tests.rules.conftest import EXAMPLE

HEAD = 'country: "BE"\nnumbers:\n  - "+3228880000"\ndefault_outgoing_number: "+3228880000"\n'


def errors_of(text: str) -> tuple[str, ...]:
    with pytest.raises(rules.RulesError) as caught:
        rules.loads(text, "f.yaml")
    return caught.value.errors


@pytest.mark.parametrize("tag", ["!!timestamp", "!!bool", "!!int", "!!float", "!!binary"])
@pytest.mark.parametrize(
    "text",
    [
        'country: {tag} x\nnumbers: ["+3228880000"]\ndefault_outgoing_number: "+3228880000"\n',
        HEAD + 'users:\n  "1001": {tag} x\n',
        HEAD + "advanced_rules:\n  apply_to_users_with_own_number: {tag} x\n",
        HEAD + "advanced_rules:\n  rules:\n    - destination_prefix: {tag} x\n"
        '      number: "+3228880000"\n',
    ],
)
def test_an_explicit_tag_yaml_cannot_construct_is_an_error_not_a_crash(tag: str, text: str) -> None:
    # `!!timestamp x` raised AttributeError and `!!bool x` KeyError out of the loader.
    errors = errors_of(text.format(tag=tag))
    assert errors and all(re.match(r"f\.yaml:\d+: ", error) for error in errors)


def test_a_switch_tagged_bool_but_not_a_boolean_is_not_read_as_true() -> None:
    text = HEAD + "advanced_rules:\n  apply_to_users_with_own_number: !!bool maybe\n"
    errors = errors_of(text)
    assert any(
        error.startswith("f.yaml:6: apply_to_users_with_own_number must be true or false")
        for error in errors
    ), errors


def test_an_empty_name_says_name_once() -> None:
    text = HEAD.replace('  - "+3228880000"\n', '  - number: "+3228880000"\n    name: ""\n')
    assert errors_of(text) == ("f.yaml:4: name is empty (leave the name out instead)",)


@pytest.mark.parametrize("number", ["+32", "+441", "+3801"])
def test_a_too_short_number_with_a_known_country_code_is_not_called_unknown(number: str) -> None:
    text = HEAD.replace('  - "+3228880000"\n', f'  - "+3228880000"\n  - "{number}"\n')
    (error,) = errors_of(text)
    assert error.startswith("f.yaml:4: ")
    assert "unknown country code" not in error
    assert "too short" in error


def test_an_unknown_country_code_is_still_called_unknown() -> None:
    text = HEAD.replace('  - "+3228880000"\n', '  - "+3228880000"\n  - "+9991234567"\n')
    (error,) = errors_of(text)
    assert "unknown country code" in error


def test_default_written_with_capitals_is_pointed_out() -> None:
    (error,) = errors_of(HEAD + 'users:\n  "1002": Default\n')
    assert error.startswith("f.yaml:6: ")
    assert "write default in lower case" in error


@pytest.mark.parametrize("country", ["KR", "CO", "IL", "TW", "BR", "SG", "CL"])
def test_a_bad_prefix_message_never_shows_a_regular_expression(country: str) -> None:
    # These countries have no single international prefix; the message showed the regex,
    # e.g. "the international prefix '0(?:0|1(?:05|[2-9]))' of IL".
    with pytest.raises(ValueError) as caught:
        DiallingPlan.for_country(country).prefix_digits("44")
    message = str(caught.value)
    assert not re.search(r"\(\?|[|\[\]\\]", message), message
    assert "'+44'" in message


def test_a_single_international_prefix_is_still_shown_with_an_example() -> None:
    with pytest.raises(ValueError, match=re.escape("'011' of US (for example '+44' or '01144')")):
        DiallingPlan.for_country("US").prefix_digits("44")


def test_loads_of_a_string_with_a_lone_surrogate_raises_rules_error() -> None:
    # A str that cannot be UTF-8 encoded raised UnicodeEncodeError instead of RulesError.
    with pytest.raises(rules.RulesError, match=r"^f\.yaml:2: "):
        rules.loads(HEAD.replace("numbers", "num\udc80bers"), "f.yaml")


_EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")
_PIECES = [
    '"',
    "'",
    ":",
    "-",
    " ",
    "\n",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "? ",
    "<<",
    "#",
    "|",
    "!!int ",
    "!!str ",
    "!!bool ",
    "!!timestamp ",
    "!!binary ",
    "!!float ",
    "!!set ",
    "~",
    "0044",
    "+44",
    "NO",
    "\t",
    "\x85",
    "\u2028",
    "\ufeff",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_EXAMPLE_TEXT)),
            st.one_of(st.sampled_from(_PIECES), st.characters(blacklist_categories=["Cs"])),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_mutated_file_loads_or_raises_rules_error_with_lines(
    edits: list[tuple[int, str, int]],
) -> None:
    text = _EXAMPLE_TEXT
    for position, piece, deleted in edits:
        position = min(position, len(text))
        text = text[:position] + piece + text[position + deleted :]
    try:
        rules.loads(text, "f.yaml")
    except rules.RulesError as exc:
        assert exc.errors
        assert all(re.match(r"f\.yaml:\d+: ", line) for line in exc.errors), exc.errors


@pytest.mark.parametrize(
    "dialled", ["+44 (0)20 7946 0000", "+44(0)2079460000", "0044 (0)20 7946 0000"]
)
def test_the_trunk_zero_written_in_brackets_after_the_country_code_is_dropped(
    dialled: str,
) -> None:
    # "+44 (0)20..." (as numbers are written on letterheads and in CRMs) gave 4402079460000,
    # which a rule for "+4420" (London) did not match.
    assert DiallingPlan.for_country("GB").normalise(dialled) == "442079460000"
    assert DiallingPlan.for_country("BE").normalise(dialled) == "442079460000"


def test_a_national_number_with_its_trunk_zero_in_brackets_stays_national() -> None:
    assert DiallingPlan.for_country("GB").normalise("(0)20 7946 0000") == "442079460000"

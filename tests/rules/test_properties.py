"""Property: resolve never raises and always shows one of the company's numbers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import rules
from tests.rules.conftest import rules_text

RULES = rules.loads(rules_text(country="GB"))
SWITCHED = rules.loads(rules_text(country="GB", switch=True))
OWN_NUMBERS = {entry.number for entry in RULES.numbers}

dialled_numbers = st.builds(
    lambda head, digits, sep: head + sep.join(digits),
    st.sampled_from(["", "+", "00", "0", "tel:+", "sip:+", "011", "(0"]),
    st.lists(st.text("0123456789", min_size=1, max_size=4), max_size=6),
    st.sampled_from(["", " ", "-", ".", ")"]),
)
destinations = st.one_of(st.text(), dialled_numbers, dialled_numbers.map(lambda d: d + "@host"))
users = st.one_of(st.sampled_from(["1001", "1002", ""]), st.text())


@settings(max_examples=500)
@given(users, destinations)
def test_resolve_never_raises_and_returns_a_company_number(user: str, destination: str) -> None:
    for loaded in (RULES, SWITCHED):
        decision = rules.resolve(loaded, user, destination)
        assert decision.number in OWN_NUMBERS
        assert decision.name == loaded.names[decision.number]
        steps = ("step 1:", "step 2:", "step 3:", "step 4:", "emergency:")
        assert decision.reason.startswith(steps)
        if decision.step == "emergency":  # an emergency call is never withheld (issue 9)
            assert decision.privacy is None


@given(destinations)
def test_normalised_destinations_are_international_digits(destination: str) -> None:
    digits = RULES.dialling.normalise(destination)
    if digits is not None:
        assert digits.isascii() and digits.isdigit()
        assert digits[0] != "0" and 3 <= len(digits) <= 15

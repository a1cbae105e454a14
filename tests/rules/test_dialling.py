"""Destination normalisation: every way a PBX dials the same number gives the same digits."""

from __future__ import annotations

import re

import pytest

from rules.dialling import DiallingPlan

UK = "442079460000"
UK_FORMS = [
    "0044 20 7946 0000",
    "+442079460000",
    "00442079460000",
    "tel:+44-20-7946-0000",
    "TEL:+44-20-7946-0000;phone-context=example.com",
    "sip:+442079460000@trunk.example.com;user=phone",
    "+44 20 7946 0000",
    "+44.20.7946.0000",
]


@pytest.mark.parametrize("country", ["GB", "BE", "FR", "DE"])
@pytest.mark.parametrize("dialled", UK_FORMS)
def test_international_forms_of_a_uk_number_are_the_same_in_any_00_country(
    country: str, dialled: str
) -> None:
    assert DiallingPlan.for_country(country).normalise(dialled) == UK


@pytest.mark.parametrize(
    ("country", "dialled", "digits"),
    [
        ("GB", "020 7946 0000", UK),
        ("GB", "(020) 7946-0000", UK),
        ("GB", "02079460000", UK),
        ("BE", "02 888 00 00", "3228880000"),
        ("BE", "0470 12 34 56", "32470123456"),
        ("FR", "01 44 55 66 77", "33144556677"),
        ("US", "1 212 555 0100", "12125550100"),
        ("US", "212-555-0100", "12125550100"),
        ("US", "011 44 20 7946 0000", UK),
        ("IT", "06 1234 5678", "390612345678"),
    ],
)
def test_national_forms_use_the_countrys_national_prefix(
    country: str, dialled: str, digits: str
) -> None:
    assert DiallingPlan.for_country(country).normalise(dialled) == digits


@pytest.mark.parametrize(
    ("country", "dialled"),
    [
        ("GB", "sip:alice@example.com"),
        ("GB", "alice"),
        ("GB", "112"),
        ("GB", "999"),
        ("BE", "1001"),
        ("BE", "*31#"),
        ("BE", ""),
        ("BE", "+"),
        ("BE", "+44"),
        ("BE", "0044"),
        ("BE", "+0044123"),
        ("BE", "+4420794600001234567"),
        ("BE", "٠٠٤٤٢٠٧٩٤٦٠٠٠٠"),
        ("BE", "sip:no-at-sign"),
        ("BE", "02079460000"),  # a GB national number means nothing in Belgium
        ("US", "0044 20 7946 0000"),  # the US international prefix is 011, not 00
    ],
)
def test_non_numbers_and_short_codes_normalise_to_none(country: str, dialled: str) -> None:
    assert DiallingPlan.for_country(country).normalise(dialled) is None


@pytest.mark.parametrize(
    ("country", "prefix", "digits"),
    [
        ("BE", "0044", "44"),
        ("BE", "+44", "44"),
        ("BE", "00 44", "44"),
        ("BE", "0032 2", "322"),
        ("US", "01144", "44"),
        ("AU", "001144", "44"),
    ],
)
def test_prefixes_are_read_as_international_digits(country: str, prefix: str, digits: str) -> None:
    assert DiallingPlan.for_country(country).prefix_digits(prefix) == digits


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("44", "must start with '+' or the international prefix '00'"),
        ("0x44", "must start with '+' or the international prefix '00'"),
        ("00", "has no digits"),
        ("+", "has no digits"),
        ("+4a", "must be digits"),
        ("000", "country codes do not start with 0"),
        ("+1234567890123456", "longer than any phone number"),
    ],
)
def test_bad_prefixes_are_explained(prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DiallingPlan.for_country("BE").prefix_digits(prefix)


def test_unknown_country_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown country"):
        DiallingPlan.for_country("XX")

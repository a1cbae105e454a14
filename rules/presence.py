"""Local presence: the owned number that looks most local to the destination.

The index maps every leading run of digits of every owned number, from its country code up
to the whole number, to the first number (in `numbers` order) that starts with it. The
longest run shared with a destination is then at most 15 dictionary lookups per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import phonenumbers


def presence_index(numbers: Sequence[str]) -> dict[str, str]:
    index: dict[str, str] = {}
    for number in numbers:
        digits = number[1:]
        country_code = str(phonenumbers.parse(number, None).country_code)
        for end in range(len(country_code), len(digits) + 1):
            index.setdefault(digits[:end], number)  # ties: the first in numbers
    return index


def most_local(index: Mapping[str, str], digits: str) -> tuple[str, str] | None:
    """(number, shared leading digits) for international `digits`, or None when no owned
    number has the destination's country code."""
    for end in range(min(len(digits), 15), 0, -1):
        number = index.get(digits[:end])
        if number is not None:
            return number, digits[:end]
    return None

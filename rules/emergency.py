"""Which dialled destinations are emergency calls, decided with plain set lookups per call.

phonenumbers' short-number metadata (the data behind `shortnumberinfo.is_emergency_number`)
gives, per region, a pattern and the possible lengths of its emergency numbers. At load the
pattern is expanded into the set of every matching digit string (lengths up to 4: at most
10,000 candidates); the few regions with longer emergency numbers keep the compiled pattern
for those lengths. A call then costs a set lookup, never a phonenumbers call.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from phonenumbers import PhoneMetadata

from rules.dialling import strip_separators, uri_number_part

_EXPANDED_LENGTH = 4


@dataclass(frozen=True, slots=True)
class EmergencyPlan:
    codes: frozenset[str]
    """Every emergency number of the country up to 4 digits, plus `emergency_numbers`."""
    long_pattern: re.Pattern[str] | None
    long_lengths: frozenset[int]
    outside_line_prefix: str | None

    @classmethod
    def for_country(
        cls, country: str, extra: frozenset[str], outside_line_prefix: str | None
    ) -> EmergencyPlan:
        metadata = PhoneMetadata.short_metadata_for_region(country)
        desc = metadata.emergency if metadata is not None else None
        if desc is None or not desc.national_number_pattern:
            return cls(extra, None, frozenset(), outside_line_prefix)
        pattern = re.compile(desc.national_number_pattern)
        lengths = set(desc.possible_length or ())
        short = sorted(length for length in lengths if length <= _EXPANDED_LENGTH)
        codes = {
            code
            for length in short
            for code in map("".join, itertools.product("0123456789", repeat=length))
            if pattern.fullmatch(code)
        }
        long_lengths = frozenset(length for length in lengths if length > _EXPANDED_LENGTH)
        return cls(
            frozenset(codes) | extra,
            pattern if long_lengths else None,
            long_lengths,
            outside_line_prefix,
        )

    def _is_code(self, digits: str) -> bool:
        if digits in self.codes:
            return True
        pattern = self.long_pattern
        return (
            pattern is not None
            and len(digits) in self.long_lengths
            and pattern.fullmatch(digits) is not None
        )

    def match(self, destination: str) -> str | None:
        """The emergency number `destination` dials, or None.

        Recognised: the number as dialled ("112", "tel:112", "sip:112@pbx", separators
        ignored) and, when `outside_line_prefix` is set, the same after that prefix ("0112").
        Not recognised: international forms ("+32112"), digits after the code ("1121"),
        a national or trunk prefix other than the outside-line prefix.
        """
        text = uri_number_part(destination.strip())
        if text is None:
            return None
        digits = strip_separators(text)
        if self._is_code(digits):
            return digits
        prefix = self.outside_line_prefix
        if prefix is not None and digits.startswith(prefix):
            rest = digits[len(prefix) :]
            if self._is_code(rest):
                return rest
        return None

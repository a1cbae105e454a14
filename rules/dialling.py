"""How numbers are dialled in one country, reduced to what per-call matching needs.

Everything that needs `phonenumbers` happens in `DiallingPlan.for_country`, once per load. The
per-call path (`normalise`) is plain string work, so resolving a call costs microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata

# Characters people and PBXs put in numbers for readability; they never carry meaning.
_VISUAL_SEPARATORS = str.maketrans("", "", " \t-.()")
_DIGITS = frozenset("0123456789")

# E.164 allows at most 15 digits; below 3 (country code plus the shortest national number
# phonenumbers knows) it cannot be a routable international number.
MAX_E164_DIGITS = 15
MIN_INTERNATIONAL_DIGITS = 3

# In the North American plan the trunk prefix "1" is optional when dialling nationally, so a
# bare 10-digit number is as national as "1" + 10 digits.
_NANP_COUNTRY_CODE = "1"
_NANP_NATIONAL_LENGTH = 10


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit() accepts e.g. Arabic-Indic and superscript digits, which no PBX dials.
    return bool(text) and text.isascii() and text.isdigit()


def strip_separators(text: str) -> str:
    return text.translate(_VISUAL_SEPARATORS)


def uri_number_part(destination: str) -> str | None:
    """The dialled part of a tel:/sip: URI, or the text itself if it is not a URI."""
    head = destination[:5].lower()
    if head.startswith("tel:"):
        return destination[4:].split(";", 1)[0]
    if head.startswith(("sip:", "sips:")):
        rest = destination[destination.index(":") + 1 :]
        user, at, _host = rest.partition("@")
        if not at:
            return None
        return user.split(";", 1)[0]
    return destination


@dataclass(frozen=True, slots=True)
class DiallingPlan:
    """The dialling conventions of `country`, taken from phonenumbers metadata at load time."""

    country: str
    country_code: str
    international_prefix: re.Pattern[str]
    international_prefix_text: str
    """The one international prefix people dial (e.g. "00"), or "" when there are several."""
    national_prefix: str | None
    national_lengths: frozenset[int]

    @classmethod
    def for_country(cls, country: str) -> DiallingPlan:
        """Raises ValueError if phonenumbers does not know `country`."""
        metadata = PhoneMetadata.metadata_for_region(country)
        if metadata is None or country not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown country {country!r}")
        lengths = metadata.general_desc.possible_length if metadata.general_desc else ()
        pattern = metadata.international_prefix or "00"
        # Shown to people in error messages; the regex form (e.g. Australia's) is unreadable.
        readable = metadata.preferred_international_prefix or pattern
        if not _is_ascii_digits(readable):
            readable = readable.replace("~", "")
        if not _is_ascii_digits(readable):
            # Several prefixes (a regex such as Korea's); there is no one to show.
            readable = ""
        return cls(
            country=country,
            country_code=str(metadata.country_code),
            international_prefix=re.compile(f"(?:{pattern})"),
            international_prefix_text=readable,
            national_prefix=metadata.national_prefix or None,
            national_lengths=frozenset(lengths),
        )

    def normalise(self, destination: str) -> str | None:
        """The destination as international digits without "+" (e.g. "442079460000").

        None when the destination is not a phone number this plan can place in the world
        (a SIP name, a short code, an extension, a malformed string): such a destination
        matches no destination prefix. Never raises.
        """
        text = uri_number_part(destination.strip())
        if text is None:
            return None
        # "+44 (0)20 ..." writes the trunk 0 that is not dialled from abroad; it only means
        # something in the national form, "(0)20 ...".
        international = strip_separators(text.replace("(0)", ""))
        if international.startswith("+"):
            return self._international(international[1:])
        text = strip_separators(text)
        if not _is_ascii_digits(text):
            return None
        found = self.international_prefix.match(international)
        if found is not None:
            return self._international(international[found.end() :])
        return self._national(text)

    def _international(self, digits: str) -> str | None:
        if not _is_ascii_digits(digits) or digits[0] == "0":
            return None
        if not MIN_INTERNATIONAL_DIGITS <= len(digits) <= MAX_E164_DIGITS:
            return None
        return digits

    def _national(self, digits: str) -> str | None:
        prefix = self.national_prefix
        if prefix is not None and digits.startswith(prefix):
            rest = digits[len(prefix) :]
            if len(rest) in self.national_lengths:
                return self.country_code + rest
        if prefix is None and len(digits) in self.national_lengths:
            return self.country_code + digits
        if self.country_code == _NANP_COUNTRY_CODE and len(digits) == _NANP_NATIONAL_LENGTH:
            return self.country_code + digits
        return None

    def prefix_digits(self, prefix: str) -> str:
        """A destination prefix as international digits, for matching against `normalise`.

        Prefixes are written internationally ("+44", or "0044" with this country's
        international prefix) because a national-form prefix would be ambiguous with the
        international prefix itself. Raises ValueError with a message for the administrator.
        """
        text = strip_separators(prefix.strip())
        if text.startswith("+"):
            digits = text[1:]
        else:
            found = self.international_prefix.match(text)
            if found is None and not self.international_prefix_text:
                raise ValueError(
                    f"destination_prefix {prefix!r} must start with '+' or one of the "
                    f"international prefixes of {self.country} (for example '+44')"
                )
            if found is None:
                raise ValueError(
                    f"destination_prefix {prefix!r} must start with '+' or the international "
                    f"prefix {self.international_prefix_text!r} of {self.country} "
                    f"(for example '+44' or '{self.international_prefix_text}44')"
                )
            digits = text[found.end() :]
        if not digits:
            raise ValueError(f"destination_prefix {prefix!r} has no digits after the prefix")
        if not _is_ascii_digits(digits):
            raise ValueError(
                f"destination_prefix {prefix!r} must be digits after the optional '+' or "
                f"international prefix"
            )
        if digits[0] == "0":
            raise ValueError(
                f"destination_prefix {prefix!r} can never match: country codes do not start with 0"
            )
        if len(digits) > MAX_E164_DIGITS:
            raise ValueError(
                f"destination_prefix {prefix!r} is longer than any phone number "
                f"({MAX_E164_DIGITS} digits)"
            )
        return digits

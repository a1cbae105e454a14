"""Checks on single values: E.164 numbers, display names, user names.

Each returns a message for the administrator, or None when the value is fine.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from rules.dialling import strip_separators

# `[0-9]`, not `\d`: in Python `\d` also matches non-ASCII digits.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")

# These would end or escape a SIP header value or a quoted display name; controls and line
# separators could start a new header. Any of them in a number or name is an injection risk.
_HEADER_SPECIALS = frozenset('<>";\\')
_LINE_SEPARATORS = frozenset("\u2028\u2029\x85")
_CHAR_NAMES = {"\r": "CR", "\n": "LF", "\0": "NUL", "\t": "TAB"}


def _describe(char: str) -> str:
    name = _CHAR_NAMES.get(char)
    if name is not None:
        return f"a {name} character"
    if char in _HEADER_SPECIALS:
        return f"the character {char!r}"
    return f"the control character U+{ord(char):04X}"


def unsafe_character(text: str) -> str | None:
    """Message if `text` holds a character that could inject into a SIP header."""
    for char in text:
        if (
            char in _HEADER_SPECIALS
            or char in _LINE_SEPARATORS
            or unicodedata.category(char) == "Cc"
        ):
            return f"{text!r} contains {_describe(char)}, which could inject SIP headers"
    return None


def e164_problem(text: str) -> str | None:
    unsafe = unsafe_character(text)
    if unsafe is not None:
        return unsafe
    if _E164.fullmatch(text) is None:
        compact = strip_separators(text)
        if _E164.fullmatch(compact) is not None:
            return f'{text!r} must be written without separators: "{compact}"'
        return (
            f"{text!r} is not a valid E.164 number ('+', country code and number, digits only, "
            'e.g. "+3228880000")'
        )
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            return f"{text!r} is not a valid E.164 number (unknown country code)"
        return f"{text!r} is not a valid E.164 number (too short to be a phone number)"
    if not phonenumbers.is_possible_number(parsed):
        return (
            f"{text!r} is not a valid E.164 number (wrong length for country code "
            f"+{parsed.country_code})"
        )
    return None


def name_problem(text: str) -> str | None:
    if not text.strip():
        return "is empty (leave the name out instead)"
    return unsafe_character(text)


def user_problem(user: str) -> str | None:
    if not user:
        return "user is empty"
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in user):
        return f"user {user!r} contains whitespace or control characters, which no SIP user has"
    return None

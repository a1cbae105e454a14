"""How a trunk wants the shown number written: the number formats, computed once per load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import phonenumbers

E164, E164_NO_PLUS, NATIONAL, INTERNATIONAL_PREFIX = (
    "e164",
    "e164_no_plus",
    "national",
    "international_prefix",
)
NUMBER_FORMATS = (E164, E164_NO_PLUS, NATIONAL, INTERNATIONAL_PREFIX)

HOST_TRUNK, HOST_PBX = "trunk", "pbx"
"""`host: trunk` writes the trunk's host (the default), `host: pbx` keeps the host of the
PBX's From URI; any other value is a fixed domain such as the provider's realm."""


@dataclass(frozen=True, slots=True)
class TrunkFormat:
    number_format: str
    host: str
    """HOST_TRUNK, HOST_PBX or a fixed domain."""
    line: int


DEFAULT_TRUNK = TrunkFormat(E164, HOST_TRUNK, 0)


def formats_of(number: str, international_prefix: str) -> Mapping[str, str]:
    """`number` (valid E.164) in every format. `national` is the number's own national form
    (digits only, e.g. 02071234567 for +442071234567); `international_prefix` uses the
    configured country's prefix ("00", "011"...), "" when that country has several."""
    parsed = phonenumbers.parse(number, None)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    digits = number[1:]
    return MappingProxyType(
        {
            E164: number,
            E164_NO_PLUS: digits,
            NATIONAL: "".join(char for char in national if char.isdigit()),
            INTERNATIONAL_PREFIX: international_prefix + digits if international_prefix else "",
        }
    )

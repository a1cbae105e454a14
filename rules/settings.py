"""The settings beyond the console: user_source, display names, emergency calls, trunks.

    user_source: [p-preferred-identity, from]      # where the calling user is read, in order
    keep_pbx_display_name: false
    emergency_numbers: ["101"]                     # besides the country's own (112, 999...)
    emergency_number: "+3228880000"                # shown on emergency calls of default users
    outside_line_prefix: "9"                       # dialled before outside numbers, if any
    trunks:                                        # keyed by position in the proxy's `trunk`
      default: {number_format: e164, host: trunk}
      "2": {number_format: national, host: "sip.provider.example"}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rules.collector import Collector
from rules.dialling import DiallingPlan
from rules.formats import (
    DEFAULT_TRUNK,
    HOST_PBX,
    HOST_TRUNK,
    INTERNATIONAL_PREFIX,
    NUMBER_FORMATS,
    TrunkFormat,
)
from rules.yaml_source import Node, SequenceNode, kind_of, line_of

FROM = "from"
USER_PLACES = (FROM, "p-preferred-identity", "remote-party-id", "contact")
"""The places the proxy knows; any other header name (X-Extension...) is read as a header."""
TRUNK_KEYS = ("number_format", "host")
DEFAULT_KEY = "default"

# RFC 3261 25.1 token: what a header name may be made of.
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_DIGITS = re.compile(r"[0-9]+")
MAX_OUTSIDE_PREFIX = 3
MIN_EMERGENCY, MAX_EMERGENCY = 2, 15

Fields = dict[str, tuple[Node, Node]]
StringOf = Callable[[Node, Collector, str], str | None]
MappingOf = Callable[[Node, Collector, str, tuple[str, ...] | None], Fields | None]
BoolOf = Callable[[Node, Collector, str], bool]
NumberRef = Callable[[Node, str], str | None]


@dataclass
class Settings:
    user_source: tuple[str, ...] = (FROM,)
    keep_pbx_display_name: bool = False
    emergency_numbers: frozenset[str] = frozenset()
    emergency_number: str | None = None
    outside_line_prefix: str | None = None
    default_trunk: TrunkFormat = DEFAULT_TRUNK
    trunks: dict[int, TrunkFormat] = field(default_factory=dict)


@dataclass(frozen=True)
class Helpers:
    """The schema's own node readers, so every message reads alike."""

    string: StringOf
    mapping: MappingOf
    boolean: BoolOf
    number_ref: NumberRef


def parse_settings(
    top: Fields, c: Collector, plan: DiallingPlan | None, h: Helpers
) -> Settings:
    s = Settings()
    if "user_source" in top:
        s.user_source = _user_source(top["user_source"][1], c, h)
    if "keep_pbx_display_name" in top:
        s.keep_pbx_display_name = h.boolean(
            top["keep_pbx_display_name"][1], c, "keep_pbx_display_name"
        )
    if "emergency_numbers" in top:
        s.emergency_numbers = _emergency_numbers(top["emergency_numbers"][1], c, h)
    if "emergency_number" in top:
        s.emergency_number = h.number_ref(top["emergency_number"][1], "emergency_number")
    if "outside_line_prefix" in top:
        s.outside_line_prefix = _outside_line_prefix(top["outside_line_prefix"][1], c, h)
    if "trunks" in top:
        _trunks(top["trunks"][1], c, plan, h, s)
    return s


def _string_list(node: Node, c: Collector, what: str, h: Helpers) -> list[tuple[Node, str]]:
    if not isinstance(node, SequenceNode):
        c.error(node, f"{what} must be a non-empty list, got {kind_of(node)}")
        return []
    if not node.value:
        c.error(node, f"{what} is an empty list: leave it out instead")
        return []
    items = [(item, h.string(item, c, what)) for item in node.value]
    return [(item, text) for item, text in items if text is not None]


def _user_source(node: Node, c: Collector, h: Helpers) -> tuple[str, ...]:
    places: dict[str, int] = {}
    for item, text in _string_list(node, c, "user_source", h):
        place = text.strip().lower()
        if _TOKEN.fullmatch(place) is None:
            c.error(
                item,
                f"user_source {text!r} is not one of {', '.join(USER_PLACES)} "
                "nor a header name",
            )
        elif place in places:
            c.error(item, f"user_source lists {place!r} twice (first at line {places[place]})")
        else:
            places[place] = line_of(item)
    return tuple(places) or (FROM,)


def _emergency_numbers(node: Node, c: Collector, h: Helpers) -> frozenset[str]:
    numbers: set[str] = set()
    for item, text in _string_list(node, c, "emergency_numbers", h):
        if _DIGITS.fullmatch(text) is None or not MIN_EMERGENCY <= len(text) <= MAX_EMERGENCY:
            c.error(
                item,
                f"emergency_numbers: {text!r} must be {MIN_EMERGENCY} to {MAX_EMERGENCY} "
                "digits as dialled (e.g. \"101\")",
            )
        else:
            numbers.add(text)
    return frozenset(numbers)


def _outside_line_prefix(node: Node, c: Collector, h: Helpers) -> str | None:
    text = h.string(node, c, "outside_line_prefix")
    if text is None:
        return None
    if _DIGITS.fullmatch(text) is None or len(text) > MAX_OUTSIDE_PREFIX:
        c.error(
            node,
            f"outside_line_prefix {text!r} must be 1 to {MAX_OUTSIDE_PREFIX} digits "
            '(e.g. "9" or "0")',
        )
        return None
    return text


def _trunks(
    node: Node, c: Collector, plan: DiallingPlan | None, h: Helpers, s: Settings
) -> None:
    fields = h.mapping(node, c, "trunks", None)
    if fields is None:
        return
    for key, (key_node, value_node) in fields.items():
        trunk = _trunk(value_node, c, plan, h, key)
        if key == DEFAULT_KEY:
            if trunk is not None:
                s.default_trunk = trunk
            continue
        position = _position(key)
        if position is None:
            c.error(
                key_node,
                f"trunks key {key!r} must be {DEFAULT_KEY} or a trunk's position in the "
                "proxy's trunk setting (1 = the first)",
            )
        elif trunk is not None:
            s.trunks[position] = trunk


def _position(key: str) -> int | None:
    if _DIGITS.fullmatch(key) is None or int(key) < 1:
        return None
    return int(key)


def _trunk(
    node: Node, c: Collector, plan: DiallingPlan | None, h: Helpers, key: str
) -> TrunkFormat | None:
    where = f"trunk {key}"
    fields = h.mapping(node, c, where, TRUNK_KEYS)
    if fields is None:
        return None
    number_format: str | None = DEFAULT_TRUNK.number_format
    host: str | None = DEFAULT_TRUNK.host
    if "number_format" in fields:
        number_format = _number_format(fields["number_format"][1], c, plan, h, where)
    if "host" in fields:
        host = _host(fields["host"][1], c, h, where)
    if number_format is None or host is None:
        return None
    return TrunkFormat(number_format, host, line_of(node))


def _number_format(
    node: Node, c: Collector, plan: DiallingPlan | None, h: Helpers, where: str
) -> str | None:
    text = h.string(node, c, f"{where} number_format")
    if text is None:
        return None
    if text not in NUMBER_FORMATS:
        c.error(node, f"{where} number_format {text!r} is not one of {', '.join(NUMBER_FORMATS)}")
        return None
    if text == INTERNATIONAL_PREFIX and plan is not None and not plan.international_prefix_text:
        c.error(
            node,
            f"{where} number_format international_prefix: {plan.country} has several "
            "international prefixes; use e164 or e164_no_plus",
        )
        return None
    return text


def _host(node: Node, c: Collector, h: Helpers, where: str) -> str | None:
    text = h.string(node, c, f"{where} host")
    if text is None:
        return None
    if text not in (HOST_TRUNK, HOST_PBX) and _HOSTNAME.fullmatch(text) is None:
        c.error(
            node,
            f"{where} host {text!r} must be {HOST_TRUNK}, {HOST_PBX} or a domain name "
            '(e.g. "sip.provider.example")',
        )
        return None
    return text

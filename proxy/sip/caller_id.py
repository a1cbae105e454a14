"""The caller-ID rewrite of an outbound call and its restore, as edits on the original bytes.

What the trunk sees: From, P-Asserted-Identity and Remote-Party-ID carry the chosen company number,
written as that trunk wants it; P-Preferred-Identity (the PBX's own wish) is gone. A withheld call
shows an anonymous From, carries `Privacy: id` and the number in P-Asserted-Identity (RFC 3323,
RFC 3325). What the PBX sees: always its own From back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Final

from proxy.sip.edits import Edit, remove_header, replace_span, replace_value
from proxy.sip.errors import SipError
from proxy.sip.grammar import NameAddr, parse_name_addr, parse_sip_uri, split_comma_values
from proxy.sip.identity import DialogIdentity
from proxy.sip.message import Header
from proxy.sip.parse import Message
from proxy.sip.policy import CallerIdDecision, TrunkIdentity
from proxy.sip.values import FrozenValue

# RFC 3323 4.1.1.3: the From of an anonymous request; ".invalid" (RFC 2606) never resolves.
ANONYMOUS_FROM: Final = b'"Anonymous" <sip:anonymous@anonymous.invalid>'
_PRIVACY_TOKENS: Final = re.compile(r"[;,\s]+")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
_NO_TRUNKS: Final[Mapping[int, TrunkIdentity]] = MappingProxyType({})


class ShownIdentity(FrozenValue):
    __match_args__ = ("number", "name", "privacy", "trunks", "other_trunks")
    __slots__ = __match_args__

    number: str  # E.164, validated by the rules engine (no CR/LF/<>";)
    name: str | None
    privacy: bool
    trunks: Mapping[int, TrunkIdentity]
    other_trunks: TrunkIdentity | None

    def __init__(
        self,
        number: str,
        name: str | None,
        privacy: bool = False,
        trunks: Mapping[int, TrunkIdentity] = _NO_TRUNKS,
        other_trunks: TrunkIdentity | None = None,
    ) -> None:
        object.__setattr__(self, "number", number)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "privacy", privacy)
        object.__setattr__(self, "trunks", trunks)
        object.__setattr__(self, "other_trunks", other_trunks)

    @classmethod
    def from_decision(cls, decision: CallerIdDecision) -> ShownIdentity:
        return ShownIdentity(  # by name: a direct native call under mypyc
            decision.number,
            decision.name,
            decision.privacy,
            decision.trunks,
            decision.other_trunks,
        )

    def for_trunk(self, index: int) -> TrunkIdentity:
        identity = self.trunks.get(index, self.other_trunks)
        return identity if identity is not None else TrunkIdentity(self.number)

    def name_addr(self, host: str, user: str | None = None) -> bytes:
        display = (self.name or self.number).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{display}" <sip:{user or self.number}@{host}>'.encode()


def rewrite_caller_id(
    msg: Message, shown: ShownIdentity, host: str, trunk_index: int = 0
) -> tuple[list[Edit], DialogIdentity]:
    """Edits that make trunk `trunk_index` (at `host`) see `shown`, and the identity pair to
    carry in the Record-Route."""
    wire = msg.wire
    from_header = wire.one("from")
    original = wire.raw[from_header.value_start : from_header.value_end]
    params = wire.raw[msg.from_addr.params_start : from_header.value_end]
    form = shown.for_trunk(trunk_index)
    identity = shown.name_addr(_host_for(msg, form, host), form.user)
    rewritten = (ANONYMOUS_FROM if shown.privacy else identity) + params  # the tag is kept
    edits = [replace_value(from_header, rewritten), *_assertion_removals(msg)]
    pai_line = b"P-Asserted-Identity: " + identity + b"\r\n"
    edits.append(replace_span(from_header.end, from_header.end, pai_line))
    edits.extend(_privacy_edits(msg, shown.privacy, from_header.end))
    if shown.privacy:
        # Remote-Party-ID would show the number PAI and Privacy: id are there to hide.
        edits.extend(remove_header(header) for header in wire.get_all("remote-party-id"))
    else:
        edits.extend(_rewrite_remote_party_id(msg, identity))
    return edits, DialogIdentity(original_from=original, rewritten_from=rewritten)


def _host_for(msg: Message, form: TrunkIdentity, trunk_host: str) -> str:
    if form.host is not None:
        return form.host
    if form.keep_pbx_host:
        try:
            pbx_host = parse_sip_uri(msg.from_addr.uri).host
        except SipError:
            pbx_host = ""
        if pbx_host:
            return pbx_host
    return trunk_host


def _privacy_edits(msg: Message, withheld: bool, at: int) -> list[Edit]:
    """Withheld: exactly `Privacy: id` (RFC 3323 4.2, RFC 3325 9.3: the trunk, trusted, keeps
    PAI for billing and emergency services and removes it toward the callee). Not withheld
    although the PBX asked (an emergency call): its Privacy values asking for id go."""
    edits: list[Edit] = []
    for header in msg.wire.get_all("privacy"):
        if withheld or "id" in _privacy_values(header.value):
            edits.append(remove_header(header))
    if withheld:
        edits.append(replace_span(at, at, b"Privacy: id\r\n"))
    return edits


def _privacy_values(value: str) -> set[str]:
    return {token.lower() for token in _PRIVACY_TOKENS.split(value) if token}


def privacy_requested(msg: Message) -> bool:
    """The INVITE asks for its identity to be withheld (RFC 3323 4.2 priv-value "id")."""
    return any("id" in _privacy_values(header.value) for header in msg.wire.get_all("privacy"))


def _rewrite_remote_party_id(msg: Message, identity: bytes) -> list[Edit]:
    """Remote-Party-ID (draft-ietf-sip-privacy) still used by many PBXes: replace the calling
    party's address, keep its parameters (privacy, screen...)."""
    return [
        replace_span(value.start, value.params_start, identity)
        for _, value in _calling_party_ids(msg)
    ]


def _calling_party_ids(msg: Message) -> Iterator[tuple[Header, NameAddr]]:
    """Each Remote-Party-ID value of the calling party (no `party` parameter means calling),
    with its header."""
    for header in msg.wire.get_all("remote-party-id"):
        for start, end in split_comma_values(header.value):
            value = parse_name_addr(header.value[start:end], header.value_start + start)
            if value.params.get("party", "calling") == "calling":
                yield header, value


def _assertion_removals(msg: Message) -> list[Edit]:
    """Every P-Asserted-Identity and P-Preferred-Identity the PBX sent, removed."""
    wire = msg.wire
    headers = wire.get_all("p-asserted-identity") + wire.get_all("p-preferred-identity")
    return [remove_header(header) for header in headers]


def asserted_identity_removals(msg: Message) -> list[Edit]:
    """In a dialog whose caller ID we set, what the PBX asserts about its caller again (in a
    re-INVITE, an UPDATE, a BYE) goes: P-Asserted-Identity, P-Preferred-Identity and a calling
    party's Remote-Party-ID would show the trunk the number the rules replaced. The trunk keeps
    the identity the initial INVITE asserted (RFC 3325 9.1: optional in later requests)."""
    calling = {header.start: header for header, _ in _calling_party_ids(msg)}  # each once
    return [*_assertion_removals(msg), *(remove_header(header) for header in calling.values())]


def replace_identity_header(msg: Message, name: str, value: bytes) -> list[Edit]:
    """Put back (or put again) a whole From or To value, tag included."""
    header = msg.wire.one(name)
    if msg.raw[header.value_start : header.value_end] == value:
        return []
    return [replace_value(header, value)]


class MessageCallFacts:
    """CallFacts of one parsed INVITE: each place is read from its header only when asked.
    `destination`, when given, is the Request-URI's user part the caller already parsed."""

    __slots__ = ("_destination", "_msg")

    def __init__(self, msg: Message, destination: str | None = None) -> None:
        self._msg = msg
        self._destination = destination

    @property
    def destination(self) -> str:
        if self._destination is None:
            self._destination = _uri_user(self._msg.wire.uri)
        return self._destination

    @property
    def privacy_requested(self) -> bool:
        return privacy_requested(self._msg)

    @property
    def display_name(self) -> str | None:
        display = self._msg.from_addr.display_name
        if display and len(display) >= 2 and display[0] == display[-1] == '"':
            display = _QUOTED_PAIR.sub(r"\1", display[1:-1])  # RFC 3261 25.1 quoted-pair
        return display or None

    def user_at(self, place: str) -> str | None:
        if place == "from":
            return _uri_user(self._msg.from_addr.uri) or None
        for header in self._msg.wire.get_all(place):
            user = _user_in(header.value, calling_party=place == "remote-party-id")
            if user:
                return user
        return None


def _user_in(value: str, *, calling_party: bool) -> str | None:
    """The user part of the first (calling party's) address in a header value; a value that is
    not an address (`X-Extension: 1001`) is the user itself."""
    text = value.strip()
    if "<" not in text and ":" not in text:
        return text or None
    for start, end in split_comma_values(value):
        try:
            address = parse_name_addr(value[start:end])
        except SipError:
            continue
        if calling_party and address.params.get("party", "calling") != "calling":
            continue
        return _uri_user(address.uri) or None
    return None


def _uri_user(uri: str) -> str:
    try:
        return parse_sip_uri(uri).user or ""
    except SipError:
        return ""

"""Responses the proxy creates itself (100 Trying, errors) and requests it originates (CANCEL, ACK).

Headers copied from the request are copied as bytes (RFC 3261 8.2.6.2), so the UAC matches them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from proxy.sip.message import SipMessage
from proxy.sip.values import FrozenValue

SERVER_NAME: Final = b"callerid-proxy"
OWN_TO_TAG_PREFIX: Final = "cp"
OWN_TO_TAG_LENGTH: Final = len(OWN_TO_TAG_PREFIX) + 10
_TAIL: Final = b"Server: " + SERVER_NAME + b"\r\nContent-Length: 0\r\n\r\n"
_STATUS_LINES: Final = {
    (100, "Trying"): b"SIP/2.0 100 Trying\r\n",
    (200, "OK"): b"SIP/2.0 200 OK\r\n",
}


def _copied_lines(wire: SipMessage, names: tuple[str, ...]) -> bytes:
    """The header lines `names`, as the request had them (line endings included), joined."""
    raw = wire.raw
    lines = []
    for name in names:
        for header in wire.get_all(name):
            line = raw[header.start : header.end]
            lines.append(line if line.endswith(b"\n") else line + b"\r\n")
    return b"".join(lines)


class ResponseBase(FrozenValue):
    """What a response of ours copies from a request (RFC 3261 8.2.6.2), kept as bytes: a
    pending server transaction holds this instead of the parsed request once nothing more has
    to be built from it (a few hundred bytes instead of the request's parse). Our To tag is
    worked out only when a final response is rendered (most calls never get one of ours)."""

    __match_args__ = ("via_from", "to_value", "has_to", "call_id_cseq", "tag_seed")
    __slots__ = __match_args__

    via_from: bytes  # the Via lines, then From, as the request had them
    to_value: bytes  # the To header's value, b"" when the request had none
    has_to: bool
    call_id_cseq: bytes
    tag_seed: tuple[bytes, bytes] | None  # (Call-ID, From) values when To has no tag

    def __init__(
        self,
        via_from: bytes,
        to_value: bytes,
        has_to: bool,
        call_id_cseq: bytes,
        tag_seed: tuple[bytes, bytes] | None,
    ) -> None:
        object.__setattr__(self, "via_from", via_from)
        object.__setattr__(self, "to_value", to_value)
        object.__setattr__(self, "has_to", has_to)
        object.__setattr__(self, "call_id_cseq", call_id_cseq)
        object.__setattr__(self, "tag_seed", tag_seed)

    @classmethod
    def of(cls, wire: SipMessage) -> ResponseBase:
        header = wire.get("to")
        value = wire.raw[header.value_start : header.value_end] if header is not None else b""
        seed = None
        if header is not None and b"tag=" not in value.lower():
            seed = (_value(wire, "call-id"), _value(wire, "from"))
        return ResponseBase(  # by name: a direct native call under mypyc
            _copied_lines(wire, ("via", "from")),
            value,
            header is not None,
            _copied_lines(wire, ("call-id", "cseq")),
            seed,
        )

    @property
    def to_tag(self) -> bytes:
        """Ours, added to a final when the request's To has no tag."""
        if self.tag_seed is None:
            return b""
        call_id, from_value = self.tag_seed
        tag = own_to_tag(call_id.strip().decode("latin-1"), tag_after_uri(from_value))
        return b";tag=" + tag.encode()

    def render(
        self, status: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        status_line = _STATUS_LINES.get((status, reason))
        if status_line is None:
            status_line = f"SIP/2.0 {status} {reason}\r\n".encode()
        lines = [status_line, self.via_from]
        if self.has_to:
            tag = self.to_tag if status > 100 else b""
            lines.append(b"To: " + self.to_value + tag + b"\r\n")
        lines.append(self.call_id_cseq)
        for name, value in extra_headers:
            lines.append(f"{name}: {value}\r\n".encode())
        lines.append(_TAIL)
        return b"".join(lines)


def own_to_tag(call_id: str, from_tag: str | None) -> str:
    """The To tag of a final response the proxy makes itself. Deterministic from what the ACK
    repeats (Call-ID, From tag), so that a retransmitted request gets the very same response and
    the ACK of a response we sent without state (a shed INVITE's 503) is known as ours and
    absorbed, never forwarded (RFC 3261 17.2.1: that ACK ends at the hop that answered)."""
    seed = f"callerid-proxy\x00{call_id}\x00{from_tag or ''}".encode("utf-8", "surrogateescape")
    return OWN_TO_TAG_PREFIX + hashlib.sha1(seed).hexdigest()[:10]


_FROM_TAG: Final = re.compile(rb";\s*tag\s*=\s*([^;>\s,]+)", re.IGNORECASE)


def _value(wire: SipMessage, name: str) -> bytes:
    header = wire.get(name)
    return b"" if header is None else wire.raw[header.value_start : header.value_end]


def tag_after_uri(value: bytes) -> str | None:
    """The tag parameter of a From or To value as sent (after its URI), or None: how our own
    To tag is seeded, and how the glances (proxy/sip/untrusted.py) read the tags they match."""
    after_uri = value[value.rfind(b">") + 1 :] if b">" in value else value
    found = _FROM_TAG.search(after_uri)
    return found.group(1).decode("latin-1") if found else None


def build_response(
    wire: SipMessage,
    status: int,
    reason: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    return ResponseBase.of(wire).render(status, reason, extra_headers)


def build_hop_request(
    sent: SipMessage,
    method: str,
    to_value: bytes | None = None,
) -> bytes:
    """CANCEL (RFC 3261 9.1) or ACK for a non-2xx (17.1.1.3) for a request we forwarded."""
    cseq = sent.get("cseq")
    number = sent.raw[cseq.value_start : cseq.value_end].split()[0] if cseq else b"1"
    top_via = sent.get("via")
    lines = [method.encode() + b" " + sent.uri.encode("latin-1") + b" SIP/2.0\r\n"]
    if top_via is not None:
        lines.append(b"Via: " + _first_via_value(sent) + b"\r\n")
    for header in sent.get_all("route"):
        lines.append(b"Route: " + sent.raw[header.value_start : header.value_end] + b"\r\n")
    lines.append(b"Max-Forwards: 70\r\n")
    for name, label in (("from", b"From"), ("call-id", b"Call-ID")):
        found = sent.get(name)
        if found is not None:
            lines.append(label + b": " + sent.raw[found.value_start : found.value_end] + b"\r\n")
    to_header = sent.get("to")
    if to_value is None and to_header is not None:
        to_value = sent.raw[to_header.value_start : to_header.value_end]
    lines.append(b"To: " + (to_value or b"") + b"\r\n")
    lines.append(b"CSeq: " + number + b" " + method.encode() + b"\r\n")
    lines.append(b"Content-Length: 0\r\n\r\n")
    return b"".join(lines)


def _first_via_value(sent: SipMessage) -> bytes:
    header = sent.get("via")
    assert header is not None
    value = sent.raw[header.value_start : header.value_end]
    return value.split(b",")[0].strip()

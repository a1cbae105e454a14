"""From bytes to a validated `Message`: framing by Content-Length, start line, required headers.

Strict where RFC 3261 and RFC 4475 say a proxy must refuse (400/505), lenient where they say to pass
things through untouched (unknown headers, unknown methods, odd but legal whitespace).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.sip.errors import BadRequest, SipError, UnparseableMessage, VersionNotSupported
from proxy.sip.grammar import (
    TOKEN,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via_value,
    split_comma_values,
)
from proxy.sip.message import SipMessage, split_message, unfold

_REQUEST_LINE = re.compile(rf"(?P<method>{TOKEN}) (?P<uri>[^ \t<>]+) (?P<version>\S+)$")
_REQUEST_METHOD = re.compile(rf"({TOKEN})[ \t]")
_SIP_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+$", re.IGNORECASE)
_STATUS_LINE = re.compile(r"SIP/2\.0 (?P<status>[1-6][0-9]{2}) (?P<reason>.*)$", re.DOTALL)
_DIGITS = re.compile(r"[0-9]+$")
_SINGLE_HEADERS = ("from", "to", "call-id", "cseq")


@dataclass(slots=True)
class Message:
    """A validated SIP message: the wire view plus the fields every proxy decision needs."""

    wire: SipMessage
    call_id: str
    cseq_number: int
    cseq_method: str
    from_addr: NameAddr
    to_addr: NameAddr
    vias: list[Via]
    max_forwards: int | None

    @property
    def raw(self) -> bytes:
        return self.wire.raw

    @property
    def is_request(self) -> bool:
        return self.wire.is_request

    @property
    def method(self) -> str:
        return self.wire.method or self.cseq_method


def parse_message(data: bytes, *, datagram: bool) -> Message:
    """Parse one message. Over UDP the body is what Content-Length says (RFC 3261 18.3)."""
    wire = split_message(data)
    try:
        _parse_start_line(wire)
        _frame_body(wire, datagram=datagram)
        return _validate(wire)
    except SipError as error:
        error.wire = wire
        raise


def lenient_split(data: bytes) -> SipMessage | None:
    """Best-effort split used to answer a message that failed validation; None if hopeless."""
    try:
        wire = split_message(data)
        _parse_start_line(wire)
    except SipError:
        return None
    return wire


def _parse_start_line(wire: SipMessage) -> None:
    line = wire.start_line
    if line.upper().startswith("SIP/"):
        match = _STATUS_LINE.match(line)
        if match is None:
            raise UnparseableMessage(f"malformed status line: {line[:60]!r}")
        wire.status = int(match.group("status"))
        wire.reason = match.group("reason")
        wire.version = "SIP/2.0"
        return
    match = _REQUEST_LINE.match(line)
    if match is None:
        # Still a request (RFC 4475 ltgtruri, lwsruri, lwsstart, trws): keep the method so that
        # it can be answered 400 rather than silently dropped.
        method = _REQUEST_METHOD.match(line)
        if method is not None:
            wire.method = method.group(1)
        raise BadRequest(f"malformed request line: {line[:80]!r}")
    wire.method = match.group("method")
    wire.uri = match.group("uri")
    wire.version = match.group("version")
    if wire.version != "SIP/2.0":
        if _SIP_VERSION.match(wire.version):
            raise VersionNotSupported(f"SIP version {wire.version} not supported")
        raise BadRequest(f"malformed SIP version {wire.version[:20]!r}")


def _frame_body(wire: SipMessage, *, datagram: bool) -> None:
    lengths = wire.get_all("content-length")
    if len(lengths) > 1:
        raise BadRequest("Content-Length appears more than once")
    available = len(wire.raw) - wire.body_start
    if not lengths:
        if not datagram:
            raise BadRequest("Content-Length is required over a stream transport")
        return
    value = lengths[0].value
    if not _DIGITS.match(value):
        raise BadRequest(f"invalid Content-Length {value[:20]!r}")
    length = int(value)
    if length > available:
        raise BadRequest(f"Content-Length {length} exceeds the {available} octets received")
    wire.body_end = wire.body_start + length
    wire.trailing_bytes = available - length


def _validate(wire: SipMessage) -> Message:
    for name in _SINGLE_HEADERS:
        wire.one(name)
    via_headers = wire.get_all("via")
    if not via_headers:
        raise BadRequest("missing Via header")
    cseq_number, cseq_method = parse_cseq(unfold(wire.one("cseq").value))
    if wire.is_request and cseq_method != wire.method:
        raise BadRequest(f"CSeq method {cseq_method} does not match request method {wire.method}")
    from_header, to_header = wire.one("from"), wire.one("to")
    from_addr = parse_name_addr(from_header.value, from_header.value_start)
    to_addr = parse_name_addr(to_header.value, to_header.value_start)
    for contact in wire.get_all("contact"):
        _validate_contact(contact.value, contact.value_start)
    call_id = wire.one("call-id").value
    if not call_id or any(char in call_id for char in " \t\r\n"):
        raise BadRequest("malformed Call-ID")
    return Message(
        wire=wire,
        call_id=call_id,
        cseq_number=cseq_number,
        cseq_method=cseq_method,
        from_addr=from_addr,
        to_addr=to_addr,
        vias=parse_vias(wire),
        max_forwards=_max_forwards(wire),
    )


def parse_vias(wire: SipMessage) -> list[Via]:
    vias: list[Via] = []
    for index, header in enumerate(wire.headers):
        if header.name != "via":
            continue
        for start, end in split_comma_values(header.value):
            vias.append(parse_via_value(header.value[start:end], header.value_start + start, index))
    return vias


def _validate_contact(value: str, offset: int) -> None:
    if value == "*":
        return
    for start, end in split_comma_values(value):
        parse_name_addr(value[start:end], offset + start)


def _max_forwards(wire: SipMessage) -> int | None:
    headers = wire.get_all("max-forwards")
    if not headers:
        return None
    if len(headers) > 1:
        raise BadRequest("Max-Forwards appears more than once")
    value = headers[0].value
    if not _DIGITS.match(value) or int(value) > 255:
        raise BadRequest(f"invalid Max-Forwards {value[:20]!r}")
    return int(value)

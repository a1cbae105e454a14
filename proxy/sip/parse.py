"""From bytes to a validated `Message`: framing by Content-Length, start line, required headers.

Strict where RFC 3261 and RFC 4475 say a proxy must refuse (400/505), lenient where they say to pass
things through untouched (unknown headers, unknown methods, odd but legal whitespace).
"""

from __future__ import annotations

import re
from typing import Final

from proxy.sip.errors import BadRequest, SipError, UnparseableMessage, VersionNotSupported
from proxy.sip.grammar import (
    TOKEN,
    NameAddr,
    Via,
    bounded_number,
    check_numeric_fields,
    parse_cseq,
    split_comma_values,
)
from proxy.sip.message import SipMessage, split_message, unfold
from proxy.sip.value_memo import NoMemo, ValueMemo

_REQUEST_LINE: Final = re.compile(rf"(?P<method>{TOKEN}) (?P<uri>[^ \t<>]+) (?P<version>\S+)$")
_REQUEST_METHOD: Final = re.compile(rf"({TOKEN})[ \t]")
_SIP_VERSION: Final = re.compile(r"SIP/[0-9]+\.[0-9]+$", re.IGNORECASE)
_STATUS_LINE: Final = re.compile(r"SIP/2\.0 (?P<status>[1-6][0-9]{2}) (?P<reason>.*)$", re.DOTALL)
_SINGLE_HEADERS: Final = ("from", "to", "call-id", "cseq")
# Methods whose name is known to be a token: a request line `METHOD uri SIP/2.0` with one of
# them is read without the regex (the answer is the regex's: tests/proxy/sip/test_start_line.py).
_USUAL_METHODS: Final = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
     "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH")
)  # fmt: skip
_VERSION_SUFFIX: Final = " SIP/2.0"
NO_MEMO: Final = NoMemo(0)  # stateless: parses every value (messages parsed outside a core)


class Message:
    """A SIP message as the proxy needs it. What every decision reads (start line, Call-ID,
    CSeq, Max-Forwards, top Via, framing) is checked on the way in; the rest of the grammar
    (From/To, the Via stack below the top, Contact, the numeric fields nobody reads) waits for
    `validate()` or for the attribute that needs it (lazy parsing, issue 6)."""

    __slots__ = (
        "_from",
        "_to",
        "_validated",
        "_vias",
        "call_id",
        "cseq_method",
        "cseq_number",
        "max_forwards",
        "memo",
        "top_via",
        "wire",
    )

    def __init__(
        self,
        wire: SipMessage,
        call_id: str,
        cseq_number: int,
        cseq_method: str,
        max_forwards: int | None,
        top_via: Via,
        memo: ValueMemo = NO_MEMO,
    ) -> None:
        self.wire = wire
        self.call_id = call_id
        self.cseq_number = cseq_number
        self.cseq_method = cseq_method
        self.max_forwards = max_forwards
        self.top_via = top_via
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._vias: list[Via] | None = None
        self._validated = False
        # where its values are parsed: the core's memo of values by text (proxy/sip/value_memo.py)
        self.memo = memo

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.wire == other.wire and self._view() == other._view()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message({self.wire.start_line[:60]!r}, call_id={self.call_id[:40]!r})"

    def _view(self) -> tuple[object, ...]:
        return (
            self.call_id, self.cseq_number, self.cseq_method, self.max_forwards,
            self.from_addr, self.to_addr, self.vias,
        )

    @property
    def raw(self) -> bytes:
        return self.wire.raw

    @property
    def is_request(self) -> bool:
        return self.wire.is_request

    @property
    def method(self) -> str:
        return self.wire.method or self.cseq_method

    @property
    def from_addr(self) -> NameAddr:
        if self._from is None:
            header = self.wire.one("from")
            self._from = self.memo.name_addr(header.value, header.value_start)
        return self._from

    @property
    def to_addr(self) -> NameAddr:
        if self._to is None:
            header = self.wire.one("to")
            self._to = self.memo.name_addr(header.value, header.value_start)
        return self._to

    @property
    def vias(self) -> list[Via]:
        """The whole Via stack, parsed on first use (the top one is always parsed)."""
        if self._vias is None:
            self._vias = parse_vias(self.wire, self.top_via, self.memo)
        return self._vias

    def validate(self) -> None:
        """The rest of the grammar a forwarded message must satisfy (RFC 3261 16.3, RFC 4475):
        From and To, every Via, every Contact, the numeric fields. Idempotent."""
        if self._validated:
            return
        try:
            parsed = (self.from_addr, self.to_addr, self.vias)
            assert parsed[2], "parse_message guarantees a Via"
            for contact in self.wire.get_all("contact"):
                _validate_contact(contact.value, contact.value_start, self.memo)
            check_numeric_fields(self.wire)
            _check_control_octets(self.wire)
        except SipError as error:
            error.wire = self.wire
            raise
        self._validated = True


def parse_message(
    data: bytes, *, datagram: bool, lazy: bool = False, memo: ValueMemo = NO_MEMO
) -> Message:
    """Parse one message. Over UDP the body is what Content-Length says (RFC 3261 18.3).
    `lazy`: only what every message needs is checked now; call `validate()` before forwarding.
    `memo`: where From, To, Contact and Via values parsed before are found again (a core's)."""
    wire = split_message(data)
    try:
        _parse_start_line(wire)
        _frame_body(wire, datagram=datagram)
        msg = _validate(wire, memo)
    except SipError as error:
        error.wire = wire
        raise
    if not lazy:
        msg.validate()
    return msg


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
    if line[:4].upper() == "SIP/":
        if _is_usual_status_line(line):  # `SIP/2.0 200 OK`: what _STATUS_LINE would match
            wire.status = int(line[8:11])
            wire.reason = line[12:]
            wire.version = "SIP/2.0"
            return
        match = _STATUS_LINE.match(line)
        if match is None:
            raise UnparseableMessage(f"malformed status line: {line[:60]!r}")
        wire.status = int(match.group("status"))
        wire.reason = match.group("reason")
        wire.version = "SIP/2.0"
        return
    method, _, rest = line.partition(" ")
    if method in _USUAL_METHODS and rest.endswith(_VERSION_SUFFIX):
        uri = rest[: -len(_VERSION_SUFFIX)]
        if uri and " " not in uri and "\t" not in uri and "<" not in uri and ">" not in uri:
            wire.method, wire.uri, wire.version = method, uri, "SIP/2.0"  # _REQUEST_LINE's
            return
    match = _REQUEST_LINE.match(line)
    if match is None:
        # Still a request (RFC 4475 ltgtruri, lwsruri, lwsstart, trws): keep the method so that
        # it can be answered 400 rather than silently dropped.
        method_match = _REQUEST_METHOD.match(line)
        if method_match is not None:
            wire.method = method_match.group(1)
        raise BadRequest(f"malformed request line: {line[:80]!r}")
    wire.method = match.group("method")
    wire.uri = match.group("uri")
    wire.version = match.group("version")
    if wire.version != "SIP/2.0":
        if _SIP_VERSION.match(wire.version):
            raise VersionNotSupported(f"SIP version {wire.version} not supported")
        raise BadRequest(f"malformed SIP version {wire.version[:20]!r}")


def _is_usual_status_line(line: str) -> bool:
    """`SIP/2.0 `, a status code [1-6][0-9][0-9] (ASCII digits, not any Unicode digit), a space:
    a line _STATUS_LINE matches, the reason being the rest (RFC 3261 7.2)."""
    return (
        len(line) >= 12
        and line.startswith("SIP/2.0 ")
        and line[11] == " "
        and "1" <= line[8] <= "6"
        and "0" <= line[9] <= "9"
        and "0" <= line[10] <= "9"
    )


def _frame_body(wire: SipMessage, *, datagram: bool) -> None:
    found = wire.positions("content-length")
    if len(found) > 1:
        raise BadRequest("Content-Length appears more than once")
    available = len(wire.raw) - wire.body_start
    if not found:
        if not datagram:
            raise BadRequest("Content-Length is required over a stream transport")
        return
    # Never more than the octets received, which the message cap bounds (digits by length first).
    length = bounded_number(wire.value_at(found[0]), "Content-Length", available)
    wire.body_end = wire.body_start + length
    wire.trailing_bytes = available - length


def _validate(wire: SipMessage, memo: ValueMemo) -> Message:
    wire.require_once(_SINGLE_HEADERS)  # RFC 3261 8.1.1
    if "via" not in wire.names():
        raise BadRequest("missing Via header")
    cseq_number, cseq_method = parse_cseq(unfold(wire.one("cseq").value))
    if wire.is_request and cseq_method != wire.method:
        raise BadRequest(f"CSeq method {cseq_method} does not match request method {wire.method}")
    call_id = wire.one("call-id").value
    if not call_id or " " in call_id or "\t" in call_id or "\n" in call_id or "\r" in call_id:
        raise BadRequest("malformed Call-ID")
    max_forwards = _max_forwards(wire)  # checked before the Via, as always
    top_via = _top_via(wire, memo)
    return Message(wire, call_id, cseq_number, cseq_method, max_forwards, top_via, memo)


def _top_via(wire: SipMessage, memo: ValueMemo) -> Via:
    position = wire.positions("via")[0]
    header = wire.header_at(position)
    value = header.value
    if "," not in value and '"' not in value:  # the usual Via line: one value
        return memo.via(value, header.value_start, position)
    start, end = split_comma_values(value)[0]
    return memo.via(value[start:end], header.value_start + start, position)


def parse_vias(wire: SipMessage, top: Via | None = None, memo: ValueMemo = NO_MEMO) -> list[Via]:
    """Every Via value in order; `top`, already parsed, is reused for the first one."""
    vias: list[Via] = []
    for position in wire.positions("via"):
        header = wire.header_at(position)
        value = header.value
        if "," not in value and '"' not in value:  # the usual Via line: one value, no scan
            if top is not None:
                vias.append(top)
                top = None
            else:
                vias.append(memo.via(value, header.value_start, position))
            continue
        for start, end in split_comma_values(value):
            if top is not None:
                vias.append(top)
                top = None
                continue
            vias.append(memo.via(value[start:end], header.value_start + start, position))
    return vias


def _check_control_octets(wire: SipMessage) -> None:
    """RFC 3261 25.1: no control octet in the header block but HTAB, and a CR only in a line
    end. A message forwarded with one reaches parsers that read it otherwise than we do (a bare
    CR as a line end, a NUL ending a string), and logs. Only a quoted-pair (a backslash before
    it, in a quoted string: RFC 4475's wsinv display name) may carry one; a CR never."""
    octet = wire.unquoted_control_octet()
    if octet is not None:
        raise BadRequest(f"control octet {octet!r} in the header fields")


def _validate_contact(value: str, offset: int, memo: ValueMemo) -> None:
    if value == "*":
        return
    for start, end in split_comma_values(value):
        memo.name_addr(value[start:end], offset + start)


def _max_forwards(wire: SipMessage) -> int | None:
    found = wire.positions("max-forwards")
    if not found:
        return None
    if len(found) > 1:
        raise BadRequest("Max-Forwards appears more than once")
    return bounded_number(wire.value_at(found[0]), "Max-Forwards", 255)  # RFC 3261 8.1.1.6

"""Split a SIP message into start line, header spans and body, keeping the original bytes.

Nothing here copies or re-encodes the message: every header is a span of `raw`, so whatever
the proxy does not edit leaves byte-identical. Text views are decoded as latin-1 so that a
character index in a header value is also its byte offset in `raw`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from proxy.sip.errors import BadRequest, UnparseableMessage

COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "n": "identity-info",
}

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
_HEADER_NAME = re.compile(r"([!%'*+\-.0-9A-Z_`a-z~]+)[ \t]*:")


@dataclass(frozen=True, slots=True)
class Header:
    """One header field: `start`..`end` covers its whole line(s) with the line ending."""

    name: str  # canonical: lower case, compact form expanded
    start: int
    end: int
    value_start: int  # first byte of the value (after the colon and leading whitespace)
    value_end: int  # last byte of the value + 1 (before the line ending, trailing WS excluded)
    value: str  # latin-1 view of raw[value_start:value_end], folding still inside


@dataclass(slots=True)
class SipMessage:
    raw: bytes
    start_line: str
    headers: list[Header]
    body_start: int
    body_end: int
    # Request fields (method is None for a response).
    method: str | None = None
    uri: str = ""
    version: str = ""
    # Response fields.
    status: int = 0
    reason: str = ""
    trailing_bytes: int = 0  # datagram octets after the message (RFC 4475 dblreq), never forwarded
    _index: dict[str, list[Header]] = field(default_factory=dict, repr=False)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.body_end]

    @property
    def headers_end(self) -> int:
        """Offset where the blank line separating headers and body starts."""
        return self.headers[-1].end if self.headers else len(self.start_line_bytes())

    def start_line_bytes(self) -> bytes:
        return self.raw[: self.raw.index(b"\n") + 1]

    def get_all(self, name: str) -> list[Header]:
        return self._index.get(name, [])

    def get(self, name: str) -> Header | None:
        found = self._index.get(name)
        return found[0] if found else None

    def one(self, name: str) -> Header:
        """The single occurrence of a header that must appear exactly once (RFC 3261 8.1.1)."""
        found = self._index.get(name, [])
        if not found:
            raise BadRequest(f"missing {name} header")
        if len(found) > 1:
            raise BadRequest(f"{name} header appears {len(found)} times")
        return found[0]


def canonical_name(raw_name: str) -> str:
    lowered = raw_name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


def split_message(data: bytes) -> SipMessage:
    """Find start line, headers and where the body starts. Body length is decided by the caller."""
    end_match = _HEADER_END.search(data)
    if end_match is None:
        raise UnparseableMessage("no end of headers (blank line) found")
    text = data[: end_match.start()].decode("latin-1")
    first_line = _LINE_END.search(text)
    start_line = text[: first_line.start()] if first_line else text
    if not start_line or start_line[0] in " \t":
        raise UnparseableMessage("empty or indented start line")
    headers_from = first_line.end() if first_line else len(text)
    headers = _split_headers(text, headers_from, end_match.start(), end_match.group())
    message = SipMessage(
        raw=data,
        start_line=start_line,
        headers=headers,
        body_start=end_match.end(),
        body_end=len(data),
    )
    for header in headers:
        message._index.setdefault(header.name, []).append(header)
    return message


def _split_headers(text: str, begin: int, stop: int, terminator: bytes) -> list[Header]:
    """Header lines from `begin` to `stop`; continuation lines (folding) join the previous."""
    headers: list[Header] = []
    line_starts: list[int] = []
    position = begin
    while position < stop:
        line_end = _LINE_END.search(text, position, stop)
        next_position = line_end.end() if line_end else stop
        if text[position] in " \t":
            if not line_starts:
                raise UnparseableMessage("continuation line before the first header")
        else:
            line_starts.append(position)
        position = next_position
    line_starts.append(stop)
    first_terminator_len = 2 if terminator.startswith(b"\r") else 1
    for index, start in enumerate(line_starts[:-1]):
        end_of_field = line_starts[index + 1]
        headers.append(_parse_header(text, start, end_of_field, stop, first_terminator_len))
    return headers


def _parse_header(text: str, start: int, end: int, stop: int, terminator_len: int) -> Header:
    match = _HEADER_NAME.match(text, start, end)
    if match is None:
        raise BadRequest(f"malformed header line: {text[start:end].strip()[:60]!r}")
    # The last header's line ending is part of the header/body separator found by the caller.
    line_end = end + terminator_len if end == stop else end
    value_start = match.end()
    value_end = end
    while value_start < value_end and text[value_start] in " \t\r\n":
        value_start += 1
    while value_end > value_start and text[value_end - 1] in " \t\r\n":
        value_end -= 1
    return Header(
        name=canonical_name(match.group(1)),
        start=start,
        end=line_end,
        value_start=value_start,
        value_end=value_end,
        value=text[value_start:value_end],
    )


def unfold(value: str) -> str:
    """A header value with line folding replaced by one space (RFC 3261 7.3.1)."""
    return re.sub(r"\r?\n[ \t]+", " ", value)

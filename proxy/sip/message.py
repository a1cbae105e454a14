"""Split a SIP message into start line, header spans and body, keeping the original bytes.

Nothing here copies or re-encodes the message: every header is a span of `raw`, so whatever
the proxy does not edit leaves byte-identical. Text views are decoded as latin-1 so that a
character index in a header value is also its byte offset in `raw`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

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
_FIELD = re.compile(
    r"([!%'*+\-.0-9A-Z_`a-z~]+)[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)\r?\n"
)


class Header(NamedTuple):
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
    # Keep the first line ending of the blank-line separator: it ends the last header.
    first_break = 2 if data[end_match.start()] == 0x0D else 1
    text = data[: end_match.start() + first_break].decode("latin-1")
    first_line = _LINE_END.search(text)
    assert first_line is not None  # the separator guarantees one
    start_line = text[: first_line.start()]
    if not start_line or start_line[0] in " \t":
        raise UnparseableMessage("empty or indented start line")
    message = SipMessage(
        raw=data,
        start_line=start_line,
        headers=_split_headers(text, first_line.end()),
        body_start=end_match.end(),
        body_end=len(data),
    )
    index = message._index
    for header in message.headers:
        found = index.get(header.name)
        if found is None:
            index[header.name] = [header]
        else:
            found.append(header)
    return message


def _split_headers(text: str, position: int) -> list[Header]:
    """Header fields from `position` to the end of `text`; folded lines belong to their field."""
    headers: list[Header] = []
    stop = len(text)
    match_field = _FIELD.match
    while position < stop:
        field_match = match_field(text, position)
        if field_match is None:
            if text[position] in " \t":
                raise UnparseableMessage("continuation line before the first header")
            line = text[position : text.find("\n", position)].strip()
            raise BadRequest(f"malformed header line: {line[:60]!r}")
        raw_value = field_match.group(2)
        value = raw_value.lstrip(" \t\r\n")
        value_start = field_match.start(2) + len(raw_value) - len(value)
        value = value.rstrip(" \t\r\n")
        headers.append(
            Header(
                canonical_name(field_match.group(1)),
                position,
                field_match.end(),
                value_start,
                value_start + len(value),
                value,
            )
        )
        position = field_match.end()
    return headers


def unfold(value: str) -> str:
    """A header value with line folding replaced by one space (RFC 3261 7.3.1)."""
    return re.sub(r"\r?\n[ \t]+", " ", value)

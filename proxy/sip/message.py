"""Split a SIP message into start line, header spans and body, keeping the original bytes.

Nothing here copies or re-encodes the message: every header is a span of `raw`, so whatever
the proxy does not edit leaves byte-identical. Text views are decoded as latin-1 so that a
character index in a header value is also its byte offset in `raw`.
"""

from __future__ import annotations

import re
from collections.abc import KeysView, Sequence
from typing import NamedTuple, overload

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


class SipMessage:
    """The wire view of one message. Header fields are found on the way through (one regex match
    per line) but a `Header` is only built when something asks for that name (lazy parsing,
    issue 6): a request forwarded untouched never materialises its Allow or User-Agent."""

    __slots__ = (
        "_built",
        "_fields",
        "_index",
        "_lists",
        "_names",
        "body_end",
        "body_start",
        "method",
        "raw",
        "reason",
        "start_line",
        "status",
        "trailing_bytes",
        "uri",
        "version",
    )

    def __init__(
        self,
        raw: bytes,
        start_line: str,
        fields: list[re.Match[str]],
        names: list[str],
        index: dict[str, list[int]],
        body_start: int,
    ) -> None:
        self.raw = raw
        self.start_line = start_line
        self.body_start = body_start
        self.body_end = len(raw)
        # Request fields (method is None for a response).
        self.method: str | None = None
        self.uri = ""
        self.version = ""
        # Response fields.
        self.status = 0
        self.reason = ""
        self.trailing_bytes = 0  # datagram octets after the message (RFC 4475 dblreq)
        self._fields = fields  # one match per header field, in order
        self._names = names  # canonical name of each field
        self._index = index  # canonical name -> positions in _fields
        self._built: list[Header | None] = [None] * len(fields)
        self._lists: dict[str, list[Header]] = {}  # get_all's answers, built once

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipMessage):
            return NotImplemented
        return (
            self.raw[: self.body_end] == other.raw[: other.body_end]
            and (self.start_line, self.body_start, self.body_end, self.trailing_bytes)
            == (other.start_line, other.body_start, other.body_end, other.trailing_bytes)
            and (self.method, self.uri, self.version, self.status, self.reason)
            == (other.method, other.uri, other.version, other.status, other.reason)
            and list(self.headers) == list(other.headers)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SipMessage({self.start_line[:60]!r}, {len(self._fields)} headers)"

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.body_end]

    @property
    def header_count(self) -> int:
        return len(self._fields)

    @property
    def headers(self) -> HeaderList:
        """Every header field in order, as a sequence that builds a field when it is read."""
        return HeaderList(self)

    @property
    def headers_end(self) -> int:
        """Offset where the blank line separating headers and body starts."""
        return self._fields[-1].end() if self._fields else len(self.start_line_bytes())

    @property
    def first_header_start(self) -> int:
        return self._fields[0].start() if self._fields else len(self.start_line_bytes())

    def start_line_bytes(self) -> bytes:
        return self.raw[: self.raw.index(b"\n") + 1]

    def header_at(self, position: int) -> Header:
        """The header field at `position` in message order, built on first use."""
        built = self._built[position]
        if built is None:
            built = self._built[position] = _build_header(
                self._names[position], self._fields[position]
            )
        return built

    def positions(self, name: str) -> tuple[int, ...] | list[int]:
        """Where the fields `name` are, in message order (`header_at` builds one)."""
        return self._index.get(name, ())

    def names(self) -> KeysView[str]:
        """The canonical names present."""
        return self._index.keys()

    def count(self, name: str) -> int:
        """How many fields `name` has, without building them."""
        return len(self._index.get(name, ()))

    def get_all(self, name: str) -> list[Header]:
        """Every `name` field in order; the list is shared: read it, do not change it."""
        found = self._lists.get(name)
        if found is None:
            positions = self._index.get(name)
            if positions is None:
                return []  # most names asked for are absent: nothing to build or keep
            found = self._lists[name] = [self.header_at(position) for position in positions]
        return found

    def get(self, name: str) -> Header | None:
        found = self._index.get(name)
        return self.header_at(found[0]) if found else None

    def one(self, name: str) -> Header:
        """The single occurrence of a header that must appear exactly once (RFC 3261 8.1.1)."""
        found = self._index.get(name, ())
        if not found:
            raise BadRequest(f"missing {name} header")
        if len(found) > 1:
            raise BadRequest(f"{name} header appears {len(found)} times")
        return self.header_at(found[0])


class HeaderList(Sequence[Header]):
    """`SipMessage.headers`: indexing builds only the field asked for."""

    __slots__ = ("_wire",)

    def __init__(self, wire: SipMessage) -> None:
        self._wire = wire

    def __len__(self) -> int:
        return self._wire.header_count

    @overload
    def __getitem__(self, position: int) -> Header: ...

    @overload
    def __getitem__(self, position: slice) -> list[Header]: ...

    def __getitem__(self, position: int | slice) -> Header | list[Header]:
        count = self._wire.header_count
        if isinstance(position, slice):
            return [self._wire.header_at(i) for i in range(*position.indices(count))]
        if position < 0:
            position += count
        if not 0 <= position < count:
            raise IndexError("header index out of range")
        return self._wire.header_at(position)


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
    fields, names, index = _split_headers(text, first_line.end())
    return SipMessage(data, start_line, fields, names, index, end_match.end())


def _split_headers(
    text: str, position: int
) -> tuple[list[re.Match[str]], list[str], dict[str, list[int]]]:
    """Header fields from `position` to the end of `text`; folded lines belong to their field.
    Only the name of each field is looked at here; its value waits for `header_at`."""
    fields: list[re.Match[str]] = []
    names: list[str] = []
    index: dict[str, list[int]] = {}
    stop = len(text)
    match_field = _FIELD.match
    compact = COMPACT_FORMS.get
    while position < stop:
        field_match = match_field(text, position)
        if field_match is None:
            if text[position] in " \t":
                raise UnparseableMessage("continuation line before the first header")
            line = text[position : text.find("\n", position)].strip()
            raise BadRequest(f"malformed header line: {line[:60]!r}")
        lowered = field_match.group(1).lower()
        name = compact(lowered, lowered)
        found = index.get(name)
        if found is None:
            index[name] = [len(fields)]
        else:
            found.append(len(fields))
        fields.append(field_match)
        names.append(name)
        position = field_match.end()
    return fields, names, index


_SPACE = " \t\r\n"
_new_header = tuple.__new__  # NamedTuple's own __new__ is a Python function: skip it


def _build_header(name: str, field_match: re.Match[str]) -> Header:
    """The value without its surrounding whitespace (folding included); most values have none,
    so the strips are only done when needed."""
    value = field_match.group(2)
    value_start, value_end = field_match.span(2)
    if value and value[0] in _SPACE:
        stripped = value.lstrip(_SPACE)
        value_start += len(value) - len(stripped)
        value = stripped
    if value and value[-1] in _SPACE:
        value = value.rstrip(_SPACE)
    value_end = value_start + len(value)
    start, end = field_match.span()
    return _new_header(Header, (name, start, end, value_start, value_end, value))


_FOLDING = re.compile(r"\r?\n[ \t]+")


def unfold(value: str) -> str:
    """A header value with line folding replaced by one space (RFC 3261 7.3.1)."""
    return _FOLDING.sub(" ", value) if "\n" in value else value

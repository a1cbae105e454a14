"""Split a SIP message into start line, header spans and body, keeping the original bytes.

Nothing here copies or re-encodes the message: every header is a span of `raw`, so whatever
the proxy does not edit leaves byte-identical. Text views are decoded as latin-1 so that a
character index in a header value is also its byte offset in `raw`.
"""

from __future__ import annotations

import re
from collections.abc import KeysView, Sequence
from typing import Final, NamedTuple, overload

from proxy.sip.errors import BadRequest, SipError, UnparseableMessage

COMPACT_FORMS: Final = {
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

# How header names are usually spelled, straight to their canonical name: one dict lookup per
# line instead of a token check, `lower()` and the compact-form lookup (a miss takes that path).
_USUAL_NAMES: Final = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Diversion", "Error-Info", "Event", "Expires", "From", "History-Info", "In-Reply-To",
    "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Remote-Party-ID", "Reply-To", "Require", "Retry-After", "Route", "RSeq",
    "Server", "Session-Expires", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)
_SPELLINGS: Final[dict[str, str]] = {
    spelling: COMPACT_FORMS.get(name.lower(), name.lower())
    for name in (*_USUAL_NAMES, *COMPACT_FORMS)
    for spelling in (name, name.lower(), name.upper(), name.title())
}

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_LINE_END: Final = re.compile(r"\r?\n")
_FIELD: Final = re.compile(
    r"([!%'*+\-.0-9A-Z_`a-z~]+)[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)\r?\n"
)
# A control octet but HTAB, or a CR not starting a CRLF (RFC 3261 25.1); and what is none.
_PLAIN_OCTETS: Final = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0x80, 0x100))
_CONTROL_OCTET: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_TOKEN_NAME: Final = re.compile(r"[!%'*+\-.0-9A-Z_`a-z~]+")


# A header block's fields: canonical names, starts (then where the last field ends), where each
# one's colon is, the first position of each name, and every position of the names seen more
# than once.
Layout = tuple[list[str], list[int], list[int], dict[str, int], dict[str, list[int]]]


class Header(NamedTuple):
    """One header field: `start`..`end` covers its whole line(s) with the line ending."""

    name: str  # canonical: lower case, compact form expanded
    start: int
    end: int
    value_start: int  # first byte of the value (after the colon and leading whitespace)
    value_end: int  # last byte of the value + 1 (before the line ending, trailing WS excluded)
    value: str  # latin-1 view of raw[value_start:value_end], folding still inside


class SipMessage:
    """The wire view of one message. One pass over the header block records, per field, only
    its canonical name and where it starts (fields are contiguous: one ends where the next
    begins); a `Header` is only built when something asks for that name (lazy parsing,
    issue 6): a request forwarded untouched never materialises its Allow or User-Agent."""

    __slots__ = (
        "_built",
        "_colons",
        "_first",
        "_lists",
        "_names",
        "_repeated",
        "_starts",
        "_text",
        "body_end",
        "body_start",
        "crlf_lines",
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
        text: str,
        start_line: str,
        layout: Layout,
        body_start: int,
        crlf_lines: bool = True,
    ) -> None:
        self.raw = raw
        self._text = text  # latin-1 view of the header block: offsets are those of `raw`
        self.crlf_lines = crlf_lines  # every line ends with CRLF, no CR elsewhere (the split's)
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
        # Canonical name of each field; where each starts, then where the last one ends; where
        # its colon is; canonical name -> its first position; for a name seen more than once,
        # all of them.
        self._names, self._starts, self._colons, self._first, self._repeated = layout
        self._built: list[Header | None] = [None] * len(self._names)
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
        return f"SipMessage({self.start_line[:60]!r}, {len(self._names)} headers)"

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.body_end]

    @property
    def header_count(self) -> int:
        return len(self._names)

    @property
    def headers(self) -> HeaderList:
        """Every header field in order, as a sequence that builds a field when it is read."""
        return HeaderList(self)

    @property
    def headers_end(self) -> int:
        """Offset where the blank line separating headers and body starts."""
        return self._starts[-1]

    @property
    def first_header_start(self) -> int:
        return self._starts[0]

    def start_line_bytes(self) -> bytes:
        return self.raw[: self.raw.index(b"\n") + 1]

    def header_at(self, position: int) -> Header:
        """The header field at `position` in message order, built on first use."""
        built = self._built[position]
        if built is None:
            start, end = self._starts[position], self._starts[position + 1]
            built = _build_header(
                self._text, self._names[position], start, end, self._colons[position]
            )
            self._built[position] = built
        return built

    def built_names(self) -> list[str]:
        """The names of the fields built so far, in message order: what a lazy parse has cost
        (the tests read it; it works the same in the compiled core)."""
        return [self._names[i] for i, built in enumerate(self._built) if built is not None]

    def value_at(self, position: int) -> str:
        """The value of the field at `position` (what `header_at(position).value` is)."""
        return (self._built[position] or self.header_at(position)).value

    def positions(self, name: str) -> tuple[int, ...] | list[int]:
        """Where the fields `name` are, in message order (`header_at` builds one)."""
        first = self._first.get(name)
        if first is None:
            return ()
        return self._repeated.get(name) or (first,)

    def names(self) -> KeysView[str]:
        """The canonical names present."""
        return self._first.keys()

    def unquoted_control_octet(self) -> str | None:
        """The first control octet of the header block that is neither HTAB, nor the CR of a
        line end, nor quoted by a backslash (a quoted-pair, RFC 3261 25.1; a CR is never)."""
        text = self._text
        if self.crlf_lines and not self.raw[: len(text)].translate(None, _PLAIN_OCTETS):
            return None  # the usual: nothing but text, HTAB and CRLF line ends (one C loop)
        for found in _CONTROL_OCTET.finditer(text):
            at = found.start()
            octet = text[at]
            if octet == "\r" or at == 0 or text[at - 1] != "\\":
                return octet
        return None

    def count(self, name: str) -> int:
        """How many fields `name` has, without building them."""
        if name not in self._first:
            return 0
        repeated = self._repeated.get(name)
        return len(repeated) if repeated else 1

    def get_all(self, name: str) -> list[Header]:
        """Every `name` field in order; the list is shared: read it, do not change it."""
        first = self._first.get(name)
        if first is None:
            return []  # most names asked for are absent: nothing to build or keep
        found = self._lists.get(name)
        if found is None:
            repeated = self._repeated.get(name)
            positions = repeated or (first,)
            found = self._lists[name] = [self.header_at(position) for position in positions]
        return found

    def get(self, name: str) -> Header | None:
        first = self._first.get(name)
        if first is None:
            return None
        return self._built[first] or self.header_at(first)

    def require_once(self, names: tuple[str, ...]) -> None:
        """Each of `names` appears exactly once, else 400 as `one` says (RFC 3261 8.1.1)."""
        first, repeated = self._first, self._repeated
        for name in names:
            if name not in first or name in repeated:
                self.one(name)  # raises: missing or repeated

    def one(self, name: str) -> Header:
        """The single occurrence of a header that must appear exactly once (RFC 3261 8.1.1)."""
        first = self._first.get(name)
        if first is None:
            raise BadRequest(f"missing {name} header")
        repeated = self._repeated.get(name)
        if repeated:
            raise BadRequest(f"{name} header appears {len(repeated)} times")
        return self._built[first] or self.header_at(first)


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
    """Find start line, headers and where the body starts. Body length is decided by the caller.
    The usual message (every line ends with CRLF, no bare CR or LF in its header block) takes
    one scan of line ends and colons, no string made per line; anything else the general,
    line-ending-tolerant regex path, which also decides what is wrong with a block the scan
    refuses when the block has a bare CR or LF (the scan may meet the bad field first)."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        text = data[: end + 2].decode("latin-1")
        first_end = text.find("\n")
        if text[first_end - 1] == "\r":  # (first_end 0: the last character, a LF, is read)
            start_line = text[: first_end - 1]
            try:
                _check_start_line(start_line)
                layout = _crlf_layout(text, first_end + 1)
            except SipError:
                if _crlf_only(text):
                    raise
                layout = None
            if layout is not None:
                return SipMessage(data, text, start_line, layout, end + 4)
    return _split_general(data)


def _crlf_only(text: str) -> bool:
    """No bare CR or LF in `text`: every CR starts a CRLF and every LF ends one."""
    breaks = text.count("\r\n")
    return text.count("\n") == breaks == text.count("\r")


def _check_start_line(start_line: str) -> None:
    if not start_line or start_line[0] in " \t":
        raise UnparseableMessage("empty or indented start line")


def _crlf_layout(text: str, position: int) -> Layout | None:
    """Names, starts and colons of the fields of the header block `text` (ending with the last
    field's CRLF) from `position` on, or None when a line ends otherwise than with CRLF (a bare
    LF, or a bare CR anywhere: left to the general path). Folded lines belong to their field
    (RFC 3261 7.3.1). Line ends and colons are found in `text` itself: no string per line."""
    names: list[str] = []
    starts: list[int] = []
    colons: list[int] = []
    first: dict[str, int] = {}
    repeated: dict[str, list[int]] = {}
    stop = len(text)
    number = 0
    breaks = 1  # the start line's
    while position < stop:
        line_end = text.find("\n", position)  # never -1: `text` ends with a line ending
        if text[line_end - 1] != "\r":
            return None  # a bare LF (an empty line too: the LF before it is one)
        breaks += 1
        lead = text[position]
        if lead == " " or lead == "\t":
            if not names:
                raise UnparseableMessage("continuation line before the first header")
            position = line_end + 1
            continue
        colon = text.find(":", position, line_end)
        name = _SPELLINGS.get(text[position:colon]) if colon > position else None
        if name is None:
            name = _unusual_name(
                text[position : line_end - 1], colon - position if colon >= 0 else -1
            )
        if first.setdefault(name, number) != number:
            repeated.setdefault(name, [first[name]]).append(number)
        names.append(name)
        starts.append(position)
        colons.append(colon)
        position = line_end + 1
        number += 1
    if text.count("\r") != breaks:
        return None  # a bare CR
    starts.append(position)
    return names, starts, colons, first, repeated


def _unusual_name(line: str, colon: int) -> str:
    """The canonical name of a header line whose name is not spelled the usual way: a token,
    maybe followed by blanks, then the colon (RFC 3261 7.3.1)."""
    raw_name = line[:colon].rstrip(" \t") if colon > 0 else ""
    if _TOKEN_NAME.fullmatch(raw_name) is None:
        raise BadRequest(f"malformed header line: {line.strip()[:60]!r}")
    return canonical_name(raw_name)


def _split_general(data: bytes) -> SipMessage:
    end_match = _HEADER_END.search(data)
    if end_match is None:
        raise UnparseableMessage("no end of headers (blank line) found")
    # Keep the first line ending of the blank-line separator: it ends the last header.
    first_break = 2 if data[end_match.start()] == 0x0D else 1
    text = data[: end_match.start() + first_break].decode("latin-1")
    first_line = _LINE_END.search(text)
    assert first_line is not None  # the separator guarantees one
    start_line = text[: first_line.start()]
    _check_start_line(start_line)
    layout = _general_layout(text, first_line.end())
    return SipMessage(data, text, start_line, layout, end_match.end(), crlf_lines=False)


def _general_layout(text: str, position: int) -> Layout:
    """Header fields from `position` to the end of `text`, whatever the line endings (one
    regex match per line); folded lines belong to their field."""
    names: list[str] = []
    starts: list[int] = []
    colons: list[int] = []
    first: dict[str, int] = {}
    repeated: dict[str, list[int]] = {}
    stop = len(text)
    match_field = _FIELD.match
    while position < stop:
        field_match = match_field(text, position)
        if field_match is None:
            if text[position] in " \t":
                raise UnparseableMessage("continuation line before the first header")
            line = text[position : text.find("\n", position)].strip()
            raise BadRequest(f"malformed header line: {line[:60]!r}")
        name = canonical_name(field_match.group(1))
        number = len(names)
        if first.setdefault(name, number) != number:
            repeated.setdefault(name, [first[name]]).append(number)
        names.append(name)
        starts.append(position)
        colons.append(text.index(":", field_match.end(1)))  # after the name and its blanks
        position = field_match.end()
    starts.append(position)
    return names, starts, colons, first, repeated


_SPACE: Final = " \t\r\n"
_new_header: Final = tuple.__new__  # NamedTuple's own __new__ is a Python function: skip it


def _build_header(text: str, name: str, start: int, end: int, colon: int) -> Header:
    """The field `start`..`end` (its line ending included), whose name ends at the colon at
    `colon`: the value is what follows it, without the surrounding whitespace (folding
    included) and the line ending. An empty or blank value starts and ends where the line
    ending does."""
    value_start = colon + 1
    stop = end - 2 if text[end - 2] == "\r" else end - 1
    # The usual single space, then text: skipped before the one slice. (A line ending follows
    # the value, so a space at `value_start` has a character after it.)
    if text[value_start] == " " and text[value_start + 1] not in _SPACE:
        value_start += 1
    value = text[value_start:stop]
    if value[:1] in _SPACE:  # "" too: an empty value
        stripped = value.lstrip(_SPACE)
        value_start += len(value) - len(stripped)
        value = stripped
    if value and value[-1] in _SPACE:
        value = value.rstrip(_SPACE)
    return _new_header(Header, (name, start, end, value_start, value_start + len(value), value))


_FOLDING: Final = re.compile(r"\r?\n[ \t]+")


def unfold(value: str) -> str:
    """A header value with line folding replaced by one space (RFC 3261 7.3.1)."""
    return _FOLDING.sub(" ", value) if "\n" in value else value

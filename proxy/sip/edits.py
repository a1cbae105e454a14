"""Edits on the original bytes ("lumps"): every change is a span replacement, the rest is copied.

A header the proxy does not touch therefore leaves byte-identical, folding and odd spacing included.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import Final, NamedTuple

from proxy.sip.grammar import Via
from proxy.sip.message import Header, SipMessage


class Edit(NamedTuple):
    """Replace `raw[start:end]` by `data` (an insert when start == end). A tuple: built and
    sorted in C on the hot path (issue 6)."""

    start: int
    end: int
    data: bytes


_new: Final = tuple.__new__  # a NamedTuple's own __new__ is a Python function (a lambda): skip it
_SPAN: Final = itemgetter(0, 1)  # (start, end): a stable sort keeps inserts at one offset in order


def apply_edits(raw: bytes, edits: Iterable[Edit], stop: int | None = None) -> bytes:
    """Replace each span of `raw[:stop]` by its data; inserts at one offset keep their order.
    One join of the untouched slices and the new data: each untouched byte is copied once."""
    limit = len(raw) if stop is None else stop
    pieces: list[bytes] = []
    append = pieces.append
    position = 0
    for start, end, data in sorted(edits, key=_SPAN):
        if start < position:
            raise ValueError(f"overlapping edits at {start}")
        append(raw[position:start])
        append(data)
        position = end
    append(raw[position:limit])
    return b"".join(pieces)


def remove_header(header: Header) -> Edit:
    return _new(Edit, (header.start, header.end, b""))


def replace_value(header: Header, value: bytes) -> Edit:
    return _new(Edit, (header.value_start, header.value_end, value))


def replace_span(start: int, end: int, value: bytes) -> Edit:
    """Any span (an insert when start == end); `Edit(...)` itself, made without the
    NamedTuple's Python-level constructor."""
    return _new(Edit, (start, end, value))


def insert_header_before(header: Header, name: str, value: bytes) -> Edit:
    return _new(Edit, (header.start, header.start, name.encode() + b": " + value + b"\r\n"))


def insert_line_before(header: Header, line: bytes) -> Edit:
    """A whole header line (name, value and CRLF, built by the caller) before `header`."""
    return _new(Edit, (header.start, header.start, line))


def insert_first_header(wire: SipMessage, name: str, value: bytes) -> Edit:
    """A header right after the start line (a new Via or Record-Route goes on top)."""
    first = wire.first_header_start
    return _new(Edit, (first, first, name.encode() + b": " + value + b"\r\n"))


def insert_first_line(wire: SipMessage, line: bytes) -> Edit:
    """A whole header line (name, value and CRLF, built by the caller) after the start line."""
    first = wire.first_header_start
    return _new(Edit, (first, first, line))


def append_header(wire: SipMessage, name: str, value: bytes) -> Edit:
    end = wire.headers_end
    return _new(Edit, (end, end, name.encode() + b": " + value + b"\r\n"))


def remove_via_value(wire: SipMessage, vias: list[Via], via: Via) -> Edit:
    """Remove one Via value; if it shares its line with others (`Via: a, b`) keep the rest."""
    header = wire.header_at(via.header_index)
    siblings = [other for other in vias if other.header_index == via.header_index]
    if len(siblings) == 1:
        return remove_header(header)
    position = siblings.index(via)
    if position + 1 < len(siblings):
        return _new(Edit, (via.start, siblings[position + 1].start, b""))
    return _new(Edit, (siblings[position - 1].end, via.end, b""))

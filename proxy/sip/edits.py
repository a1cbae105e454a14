"""Edits on the original bytes ("lumps"): every change is a span replacement, the rest is copied.

A header the proxy does not touch therefore leaves byte-identical, folding and odd spacing included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.sip.grammar import Via
from proxy.sip.message import Header, SipMessage


@dataclass(frozen=True, slots=True, order=True)
class Edit:
    start: int
    end: int
    data: bytes


def apply_edits(raw: bytes, edits: Iterable[Edit], stop: int | None = None) -> bytes:
    """Replace each span of `raw[:stop]` by its data; inserts at one offset keep their order."""
    ordered = sorted(edits, key=lambda edit: (edit.start, edit.end))
    limit = len(raw) if stop is None else stop
    pieces: list[bytes] = []
    position = 0
    for edit in ordered:
        if edit.start < position:
            raise ValueError(f"overlapping edits at {edit.start}")
        pieces.append(raw[position : edit.start])
        pieces.append(edit.data)
        position = edit.end
    pieces.append(raw[position:limit])
    return b"".join(pieces)


def remove_header(header: Header) -> Edit:
    return Edit(header.start, header.end, b"")


def replace_value(header: Header, value: bytes) -> Edit:
    return Edit(header.value_start, header.value_end, value)


def replace_span(start: int, end: int, value: bytes) -> Edit:
    return Edit(start, end, value)


def insert_header_before(header: Header, name: str, value: bytes) -> Edit:
    return Edit(header.start, header.start, name.encode() + b": " + value + b"\r\n")


def insert_first_header(wire: SipMessage, name: str, value: bytes) -> Edit:
    """A header right after the start line (a new Via or Record-Route goes on top)."""
    first = wire.first_header_start
    return Edit(first, first, name.encode() + b": " + value + b"\r\n")


def append_header(wire: SipMessage, name: str, value: bytes) -> Edit:
    end = wire.headers_end
    return Edit(end, end, name.encode() + b": " + value + b"\r\n")


def remove_via_value(wire: SipMessage, vias: list[Via], via: Via) -> Edit:
    """Remove one Via value; if it shares its line with others (`Via: a, b`) keep the rest."""
    header = wire.header_at(via.header_index)
    siblings = [other for other in vias if other.header_index == via.header_index]
    if len(siblings) == 1:
        return remove_header(header)
    position = siblings.index(via)
    if position + 1 < len(siblings):
        return Edit(via.start, siblings[position + 1].start, b"")
    return Edit(siblings[position - 1].end, via.end, b"")

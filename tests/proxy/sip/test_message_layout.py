"""The two ways `split_message` finds the header fields agree: the scan of CRLF-only blocks (line
ends and colons found in the text, no string per line) and the general, line-ending-tolerant
regex path, which any block with a bare CR or LF takes. Same fields, spans, colons and values,
or the same refusal, for every CRLF-only block; and both agree with what a reader of RFC 3261
7.3.1 expects of a few hand-written ones."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.sip import message as message_module
from proxy.sip.errors import SipError
from proxy.sip.message import SipMessage, split_message

SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Mostly names a parser accepts (usual spellings, compact forms, other cases, blanks before the
# colon), a few it refuses: so that most blocks parse and both paths' fields are compared.
GOOD_NAMES = st.sampled_from(
    ["Via", "v", "VIA", "via", "From", "f", "To", "Call-ID", "i", "CSeq", "Contact", "m",
     "Content-Length", "l", "X-Custom", "x-odd.name!", "Route", "Record-Route", "Subject",
     "Max-Forwards", "Via ", "Via\t", "To  ", "cOnTaCt"]
)  # fmt: skip
BAD_NAMES = st.sampled_from(["", "Bad Name", "Ü", "(x)"])
VALUES = st.sampled_from(
    ["", " ", "  x", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1", " <sip:a@b>;tag=1", "1 INVITE",
     "abc  ", "a:b:c", "\t tabbed", "v=0", ":", " : "]
)  # fmt: skip
START_LINES = st.sampled_from(["INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "OPTIONS * SIP/2.0"])
BAD_START_LINES = st.sampled_from([" INVITE sip:a@b SIP/2.0", ""])


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 15)) == 0


CRLF = st.just("\r\n")


@st.composite
def crlf_blocks(draw: st.DrawFn, endings: st.SearchStrategy[str] = CRLF) -> bytes:
    """A message whose header block has only CRLF line endings (or `endings`): fields, folded
    lines, odd names."""
    lines = [draw(BAD_START_LINES if rarely(draw) else START_LINES)]
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from([" folded", "\tfolded too", "  "])))
            continue
        name = draw(BAD_NAMES if rarely(draw) else GOOD_NAMES)
        colon = "" if rarely(draw) else draw(st.sampled_from([":", ": ", " :"]))
        lines.append(name + colon + draw(VALUES))
    block = "".join(line + draw(endings) for line in lines)
    return (block + "\r\n" + draw(st.sampled_from(["", "v=0\r\n"]))).encode("latin-1")


# Mostly CRLF, sometimes a bare LF or CR, or a CR inside a line: blocks the scan must hand over.
MIXED_ENDINGS = st.sampled_from(["\r\n"] * 6 + ["\n", "\r", "\r\r\n", "\rx\r\n"])


def split_both(data: bytes) -> tuple[SipMessage | str, SipMessage | str]:
    """What each path makes of `data`: the message, or the refusal's type and text."""

    def outcome(split: object) -> SipMessage | str:
        try:
            result = split(data)  # type: ignore[operator]
        except SipError as error:
            return f"{type(error).__name__}: {error}"
        assert isinstance(result, SipMessage)
        return result

    return outcome(split_message), outcome(message_module._split_general)


def fields(wire: SipMessage) -> list[tuple[str, int, int, int, int, str]]:
    return [tuple(wire.header_at(i)) for i in range(wire.header_count)]  # type: ignore[misc]


@SETTINGS
@given(crlf_blocks())
def test_the_crlf_scan_and_the_general_path_agree(data: bytes) -> None:
    fast, general = split_both(data)
    if isinstance(fast, str) or isinstance(general, str):
        assert fast == general
        return
    assert (fast.start_line, fast.body_start) == (general.start_line, general.body_start)
    assert fields(fast) == fields(general)
    assert list(fast.names()) == list(general.names())
    for name in fast.names():
        assert fast.positions(name) == general.positions(name)


@SETTINGS
@given(crlf_blocks(MIXED_ENDINGS))
def test_a_block_with_a_bare_cr_or_lf_is_read_as_the_general_path_reads_it(data: bytes) -> None:
    """Whatever the scan meets first (a bad field, a bad start line), a block that is not
    CRLF-only gets the general path's fields or refusal."""
    fast, general = split_both(data)
    if isinstance(fast, str) or isinstance(general, str):
        assert fast == general
        return
    assert fields(fast) == fields(general)
    assert (fast.start_line, fast.body_start) == (general.start_line, general.body_start)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("Via: a\r\nTo:b\r\n", [("via", "a"), ("to", "b")]),
        ("Subject :  hi there \r\n", [("subject", "hi there")]),
        ("Subject: one\r\n two\r\nTo: x\r\n", [("subject", "one\r\n two"), ("to", "x")]),
        ("X-A: a:b:c\r\nv: SIP/2.0/UDP h\r\n", [("x-a", "a:b:c"), ("via", "SIP/2.0/UDP h")]),
        ("Empty:\r\nBlank:   \r\n", [("empty", ""), ("blank", "")]),
    ],
)
def test_fields_of_a_crlf_block(block: str, expected: list[tuple[str, str]]) -> None:
    wire = split_message(f"OPTIONS sip:a@b SIP/2.0\r\n{block}\r\n".encode())
    found = [(header.name, header.value) for header in wire.headers]
    assert found == expected
    for header in wire.headers:  # each value is the span of `raw` it says
        assert wire.raw[header.value_start : header.value_end].decode("latin-1") == header.value
        assert wire.raw[header.start : header.end].endswith(b"\r\n")


@pytest.mark.parametrize(
    "block",
    [" folded first: x\r\n", "No colon here\r\n", "Bad Name: x\r\n", ": no name\r\n"],
)
def test_malformed_crlf_blocks_are_refused_as_the_general_path_refuses(block: str) -> None:
    fast, general = split_both(f"OPTIONS sip:a@b SIP/2.0\r\n{block}\r\n".encode())
    assert isinstance(fast, str), fast
    assert fast == general

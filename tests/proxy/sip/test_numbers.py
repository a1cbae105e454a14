"""Every numeric header field is bounded (issue 7): refused with 400, never a traceback, also
with more digits than Python's int() accepts (4,301+: ValueError before this was fixed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from proxy.sip.addresses import Outgoing
from proxy.sip.core import ProxyCore
from proxy.sip.errors import BadRequest
from proxy.sip.framing import StreamFramer
from proxy.sip.grammar import bounded_number, parse_cseq
from tests.proxy.sip.support import (
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    in_dialog,
    invite,
    make_core,
    sent_to,
    start_line,
    two_trunks,
)

HUGE = "9" * 5000  # over sys.get_int_max_str_digits() (4,300)
ZEROS = "0" * 5000 + "1"


def replaced(old: bytes, new: str) -> bytes:
    data = invite()
    assert old in data
    return data.replace(old, new.encode(), 1)


def with_header(line: str) -> bytes:
    return invite(extra=line + "\r\n")


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    forwarded: bool  # False: refused with 400


CASES = [
    Case("CSeq 2**31-1", replaced(b"CSeq: 1 ", f"CSeq: {2**31 - 1} "), True),
    Case("CSeq 2**31", replaced(b"CSeq: 1 ", f"CSeq: {2**31} "), False),
    Case("CSeq 5000 digits", replaced(b"CSeq: 1 ", f"CSeq: {HUGE} "), False),
    Case("CSeq 5000 leading zeros", replaced(b"CSeq: 1 ", f"CSeq: {ZEROS} "), True),
    Case("Max-Forwards 255", replaced(b"Max-Forwards: 70", "Max-Forwards: 255"), True),
    Case("Max-Forwards 256", replaced(b"Max-Forwards: 70", "Max-Forwards: 256"), False),
    Case("Max-Forwards 5000 digits", replaced(b"Max-Forwards: 70", f"Max-Forwards: {HUGE}"),
         False),
    Case("Max-Forwards superscript", replaced(b"Max-Forwards: 70", "Max-Forwards: 7\xb2"), False),
    Case("Content-Length 5000 digits", replaced(b"Content-Length: ", f"Content-Length: {HUGE}"),
         False),
    Case("Content-Length beyond the datagram",
         replaced(b"Content-Length: ", "Content-Length: 99999"), False),
    Case("Expires 2**32-1", with_header(f"Expires: {2**32 - 1}"), True),
    Case("Expires 2**32", with_header(f"Expires: {2**32}"), False),
    Case("Expires 5000 digits", with_header(f"Expires: {HUGE}"), False),
    Case("Expires as a date (RFC 4475 baddate)", with_header("Expires: Thu, 44 Dec 19999"), True),
    Case("Retry-After 5000 digits", with_header(f"Retry-After: {HUGE} (lunch)"), False),
    Case("Retry-After with a comment", with_header("Retry-After: 120 (lunch)"), True),
    Case("Session-Expires 5000 digits", with_header(f"Session-Expires: {HUGE};refresher=uac"),
         False),
    Case("Min-SE too large", with_header(f"Min-SE: {2**40}"), False),
    Case("RSeq 5000 digits", with_header(f"RSeq: {HUGE}"), False),
    Case("Via port 65535", replaced(b"127.0.0.1:5070;", "127.0.0.1:65535;"), True),
    Case("Via port 65536", replaced(b"127.0.0.1:5070;", "127.0.0.1:65536;"), False),
    Case("Via rport=5070", replaced(b";rport\r\n", ";rport=5070\r\n"), True),
    Case("Via rport=0", replaced(b";rport\r\n", ";rport=0\r\n"), False),
    Case("Via rport=70000", replaced(b";rport\r\n", ";rport=70000\r\n"), False),
    Case("Via rport 5000 digits", replaced(b";rport\r\n", f";rport={HUGE}\r\n"), False),
    Case("Via ttl=256", replaced(b";rport\r\n", ";rport;ttl=256\r\n"), False),
    Case("Via lower in the stack, 5000-digit rport",
         with_header(f"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2;rport={HUGE}"), False),
]


def through_core(core: ProxyCore, data: bytes) -> list[Outgoing]:
    core.receive(data, PBX_SOURCE, 0.0)
    return core.datagrams_to_send()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_numeric_fields_through_the_core(case: Case) -> None:
    out = through_core(make_core(), case.request)
    if case.forwarded:
        assert len(sent_to(out, TRUNK)) == 1, [start_line(o.data) for o in out]
    else:
        assert [start_line(o.data) for o in out] == ["SIP/2.0 400 Bad Request"]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_numeric_fields_over_a_stream(case: Case) -> None:
    """Framed by the stream framer first: refused by it (a length it cannot trust) or by the
    parser, never an exception."""
    core = make_core()
    out: list[Outgoing] = []
    for frame in StreamFramer().feed(case.request):
        if frame.fatal:
            core.receive_broken_stream(frame.data, frame.reason, PBX_SOURCE, status=frame.status)
        else:
            core.receive(frame.data, PBX_SOURCE, 0.0)
        out += core.datagrams_to_send()
    if case.forwarded:
        assert len(sent_to(out, TRUNK)) == 1
    else:
        assert out and start_line(out[0].data) in (
            "SIP/2.0 400 Bad Request", "SIP/2.0 513 Message Too Large"
        )


def test_a_5000_digit_content_length_on_a_stream_is_refused_by_the_framer() -> None:
    head = f"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {HUGE}\r\n\r\n".encode()
    (frame,) = StreamFramer().feed(head)
    assert frame.fatal and frame.status == 513


@pytest.mark.parametrize(
    ("text", "maximum", "expected"),
    [
        ("0", 255, 0),
        ("255", 255, 255),
        ("000255", 255, 255),
        (ZEROS, 255, 1),
        ("256", 255, None),
        (HUGE, 2**31, None),
        ("", 255, None),
        ("1a", 255, None),
        ("\xb2", 255, None),  # '²' is str.isdigit() but int() refuses it
        ("\u0661", 255, None),  # ARABIC-INDIC DIGIT ONE: also isdigit()
        ("-1", 255, None),
        ("+1", 255, None),
        (" 1", 255, None),
    ],
)
def test_bounded_number(text: str, maximum: int, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(BadRequest):
            bounded_number(text, "field", maximum)
    else:
        assert bounded_number(text, "field", maximum) == expected


@pytest.mark.parametrize("number", [str(2**31), HUGE, "1" + "0" * 10])
def test_cseq_number_out_of_range(number: str) -> None:
    with pytest.raises(BadRequest, match="out of range"):
        parse_cseq(f"{number} INVITE")


# ----------------------------------------------------------------------------- Route tr=
def in_dialog_bye(tr: str) -> bytes:
    return in_dialog(
        "BYE",
        uri="sip:1001@127.0.0.1:5070",  # the PBX's Contact
        via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bye-tr",
        from_="<sip:callee@127.0.0.1>;tag=trunk-1",
        to='"Alice" <sip:1001@pbx.example.com>;tag=pbx-tag-1',
        route=f"<sip:127.0.0.1:5060;lr;tr={tr}>",
    )


@pytest.mark.parametrize("tr", [HUGE, "2", "9999", "\xb2", "-1", "1" + "0" * 4400])
def test_a_route_trunk_index_outside_the_trunk_list_is_refused(tr: str) -> None:
    clocked = two_trunks()
    out = clocked.receive(in_dialog_bye(tr), TRUNK_SOURCE)
    assert [start_line(o.data) for o in out] == ["SIP/2.0 400 Bad Request"]


def test_a_route_trunk_index_inside_the_trunk_list_is_followed() -> None:
    clocked = two_trunks()
    out = clocked.receive(in_dialog_bye("1"), TRUNK_SOURCE)
    assert [o.target.port for o in out if o.data.startswith(b"BYE ")] == [5070]

"""Unit tests of the parser pieces: split into spans, compact forms, folding, comma-joined Via,
header-name case, strictness, edits and the byte-identical round trip.

Project standard: every message parsed here is also fed one byte at a time through the stream
framer and must give the very same result (`parsed`, `refused`)."""

from __future__ import annotations

import pytest

from proxy.sip.edits import Edit, apply_edits, remove_header, remove_via_value, replace_value
from proxy.sip.errors import BadRequest, SipError, UnparseableMessage, VersionNotSupported
from proxy.sip.framing import StreamFramer
from proxy.sip.grammar import parse_name_addr, parse_sip_uri, parse_via_value, split_comma_values
from proxy.sip.message import COMPACT_FORMS, canonical_name, split_message, unfold
from proxy.sip.parse import Message, parse_message
from tests.proxy.sip.support import PBX, PBX_SOURCE, TRUNK, TRUNK_SOURCE, invite, make_core, sent_to

OPTIONS_LINE = "OPTIONS sip:bob@example.com SIP/2.0"


def message(*headers: str, start: str = OPTIONS_LINE, body: str = "") -> bytes:
    lines = "".join(header + "\r\n" for header in headers)
    return f"{start}\r\n{lines}Content-Length: {len(body)}\r\n\r\n{body}".encode("latin-1")


BASIC = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
    "From: <sip:alice@example.com>;tag=a1",
    "To: <sip:bob@example.com>",
    "Call-ID: c1@example.com",
    "CSeq: 1 OPTIONS",
    "Max-Forwards: 70",
)


def bytewise_frames(data: bytes) -> list[bytes]:
    framer = StreamFramer()
    frames = []
    for index in range(len(data)):
        for frame in framer.feed(data[index : index + 1]):
            assert not frame.fatal, frame.reason
            frames.append(frame.data)
    assert framer.pending == 0
    return frames


def parsed(data: bytes) -> Message:
    """Parse as a datagram, and as a stream fed byte by byte: both views must be equal."""
    msg = parse_message(data, datagram=True)
    (frame,) = bytewise_frames(data)
    assert frame == data[: msg.wire.body_end]
    assert parse_message(frame, datagram=False) == parse_message(frame, datagram=True)
    if msg.wire.trailing_bytes == 0:
        assert parse_message(frame, datagram=False) == msg
    return msg


def refused(data: bytes, error: type[SipError], status: int) -> SipError:
    """Refused as a datagram with `status`; byte by byte on a stream: the same refusal, or
    a fatal framing error (400) when it is the length that cannot be trusted."""
    with pytest.raises(error) as caught:
        parse_message(data, datagram=True)
    assert caught.value.status_code == status
    framer = StreamFramer()
    frames = [frame for index in range(len(data)) for frame in framer.feed(data[index : index + 1])]
    if frames and not frames[0].fatal:
        assert len(frames) == 1
        with pytest.raises(error) as on_stream:
            parse_message(frames[0].data, datagram=False)
        assert on_stream.value.status_code == status
    elif frames:
        assert status == 400 and framer.broken
    return caught.value


# ----------------------------------------------------------------------------- split and spans
def test_spans_cover_the_message_exactly() -> None:
    data = message(*BASIC, "X-Odd:   spaced value  ", body="hello")
    msg = parsed(data)
    wire = msg.wire
    pieces = [wire.start_line_bytes()] + [data[h.start : h.end] for h in wire.headers]
    assert b"".join(pieces) + b"\r\n" + wire.body == data
    odd = wire.get("x-odd")
    assert odd is not None and odd.value == "spaced value"
    assert data[odd.value_start : odd.value_end] == b"spaced value"
    assert wire.body == b"hello"


# Valid messages of several shapes; the live test also sends each through a real TCP connection.
SAMPLES = {
    "basic": message(*BASIC),
    "body": message(*BASIC, body="v=0\r\n")
    .replace(b"z9hG4bK-1", b"z9hG4bK-body")
    .replace(b"c1@", b"c-body@"),
    "invite": invite(),
    "comma-via": message("v: SIP/2.0/TCP h2;branch=z9hG4bK-2 , SIP/2.0/UDP h3", *BASIC).replace(
        b"c1@", b"c-comma@"
    ),
    "compact-folded": message(
        "VIA: SIP/2.0/UDP h;branch=z9hG4bK-x", "f: <sip:a@b>;tag=1", "t: sip:c@d", "i: x@y",
        "CSeq: 7 OPTIONS", "Subject: folded\r\n  over\r\n\ttwo lines", "Max-Forwards: 9",
    ),
}


@pytest.mark.parametrize("data", SAMPLES.values(), ids=SAMPLES.keys())
def test_untouched_message_reserialises_byte_identical(data: bytes) -> None:
    msg = parsed(data)
    assert apply_edits(msg.raw, [], msg.wire.body_end) == data


def test_lf_only_line_endings_are_parsed() -> None:
    data = message(*BASIC).replace(b"\r\n", b"\n")
    msg = parsed(data)
    assert msg.call_id == "c1@example.com"
    assert msg.wire.get_all("via")[0].end == data.index(b"From:")


def test_datagram_body_is_cut_at_content_length() -> None:
    data = message(*BASIC, body="abc") + b"garbage after"
    msg = parse_message(data, datagram=True)
    assert msg.wire.body == b"abc"
    assert msg.wire.trailing_bytes == len(b"garbage after")
    assert bytewise_frames(data[: msg.wire.body_end]) == [data[: msg.wire.body_end]]


def test_datagram_without_content_length_takes_the_rest_but_a_stream_refuses() -> None:
    data = message(*BASIC, body="xyz").replace(b"Content-Length: 3\r\n", b"")
    msg = parse_message(data, datagram=True)
    assert msg.wire.body == b"xyz"
    with pytest.raises(BadRequest):
        parse_message(data, datagram=False)
    framer = StreamFramer()
    frames = [f for i in range(len(data)) for f in framer.feed(data[i : i + 1])]
    assert [frame.fatal for frame in frames] == [True]


# ----------------------------------------------------------------------------- header names
@pytest.mark.parametrize(("compact", "full"), sorted(COMPACT_FORMS.items()))
def test_compact_form_is_canonicalised(compact: str, full: str) -> None:
    assert canonical_name(compact) == full
    assert canonical_name(compact.upper()) == full
    data = b"OPTIONS sip:bob@example.com SIP/2.0\r\n" + compact.encode() + b": 0\r\n"
    if full != "content-length":
        data += b"Content-Length: 0\r\n"
    data += b"\r\n"
    wire = split_message(data)
    assert wire.headers[0].name == full
    assert bytewise_frames(data) == [data]


def test_compact_core_headers_are_understood() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-c\r\n"
        b"f: Alice <sip:alice@example.com>;tag=a\r\n"
        b"t: <sip:bob@example.com>\r\n"
        b"i: compact@example.com\r\n"
        b"CSeq: 4 INVITE\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n\r\nhi"
    )
    msg = parsed(data)
    assert msg.call_id == "compact@example.com"
    assert msg.from_addr.tag == "a" and msg.from_addr.display_name == "Alice"
    assert msg.to_addr.uri == "sip:bob@example.com"
    assert [via.host for via in msg.vias] == ["192.0.2.1"]
    assert msg.wire.body == b"hi"
    assert msg.wire.get("contact") is not None and msg.wire.get("content-type") is not None


@pytest.mark.parametrize("spelling", ["call-id", "CALL-ID", "cAlL-iD", "Call-Id", "i", "I"])
def test_header_names_are_case_insensitive(spelling: str) -> None:
    data = message(*(line for line in BASIC if not line.startswith("Call-ID")),
                   f"{spelling}  :  any-case@example.com")
    msg = parsed(data)
    assert msg.call_id == "any-case@example.com"
    (header,) = msg.wire.get_all("call-id")
    assert data[header.start : header.end].startswith(spelling.encode())


def test_an_unknown_header_is_kept_as_is() -> None:
    data = message(*BASIC, "X-Weird_Name.~!: ;;,,;;")
    msg = parsed(data)
    header = msg.wire.get("x-weird_name.~!")
    assert header is not None and header.value == ";;,,;;"


# ----------------------------------------------------------------------------- folding
def test_folded_header_spans_all_its_lines() -> None:
    folded = "From: \"Alice\"\r\n <sip:alice@example.com>\r\n\t;tag=f1"
    data = message(*BASIC[:1], folded, *BASIC[2:])
    msg = parsed(data)
    header = msg.wire.one("from")
    assert data[header.start : header.end] == (
        b'From: "Alice"\r\n <sip:alice@example.com>\r\n\t;tag=f1\r\n'
    )
    assert unfold(header.value) == '"Alice" <sip:alice@example.com> ;tag=f1'
    assert msg.from_addr.tag == "f1"
    assert msg.from_addr.uri == "sip:alice@example.com"


def test_folded_cseq_and_via() -> None:
    data = message(
        "Via: SIP/2.0/UDP\r\n  192.0.2.9:5070\r\n  ;branch=z9hG4bK-fold",
        *BASIC[1:4],
        "CSeq: 12\r\n OPTIONS",
    )
    msg = parsed(data)
    assert (msg.cseq_number, msg.cseq_method) == (12, "OPTIONS")
    assert msg.vias[0].host == "192.0.2.9" and msg.vias[0].port == 5070
    assert msg.vias[0].branch == "z9hG4bK-fold"


def test_a_continuation_line_before_any_header_is_unparseable() -> None:
    data = b"OPTIONS sip:bob@example.com SIP/2.0\r\n folded\r\nContent-Length: 0\r\n\r\n"
    refused(data, UnparseableMessage, 400)


# ----------------------------------------------------------------------------- comma-joined Via
OURS = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp1"
B = "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-b"
C = "SIP/2.0/UDP h9;branch=z9hG4bK-c"
VIA_LINE = f"Via: {OURS}, {B}"


def test_comma_joined_via_values_have_their_own_spans() -> None:
    data = message(VIA_LINE, "Via: SIP/2.0/TCP h3:5062;branch=z9hG4bK-c", *BASIC[1:])
    msg = parsed(data)
    assert [(v.host, v.port, v.branch, v.header_index) for v in msg.vias] == [
        ("127.0.0.1", 5060, "z9hG4bKcp1", 0),
        ("192.0.2.7", None, "z9hG4bK-b", 0),
        ("h3", 5062, "z9hG4bK-c", 1),
    ]
    assert [data[v.start : v.end] for v in msg.vias] == [
        b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp1",
        b"SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-b",
        b"SIP/2.0/TCP h3:5062;branch=z9hG4bK-c",
    ]


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    value = '"Doe, John" <sip:j@example.com;x=a,b>;tag=1, <sip:k@example.com>'
    assert [value[s:e] for s, e in split_comma_values(value)] == [
        '"Doe, John" <sip:j@example.com;x=a,b>;tag=1',
        "<sip:k@example.com>",
    ]
    with pytest.raises(BadRequest):
        split_comma_values('"unbalanced, <sip:x@y>')


@pytest.mark.parametrize(
    ("which", "expected_line"),
    [
        (0, f"Via: {B}, {C}\r\n".encode()),
        (1, f"Via: {OURS}, {C}\r\n".encode()),
        (2, f"Via: {OURS}, {B}\r\n".encode()),
    ],
    ids=["first", "middle", "last"],
)
def test_remove_via_value_from_a_comma_joined_line(which: int, expected_line: bytes) -> None:
    data = message(f"{VIA_LINE}, {C}", *BASIC[1:])
    msg = parsed(data)
    out = apply_edits(msg.raw, [remove_via_value(msg.wire, msg.vias, msg.vias[which])])
    assert out.split(b"\r\n", 1)[1].startswith(expected_line)
    assert out.replace(expected_line, b"") == data.replace(data.split(b"\r\n")[1] + b"\r\n", b"")
    assert len(parsed(out).vias) == 2


def test_remove_a_via_alone_on_its_line_removes_the_line() -> None:
    data = message("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp1", *BASIC)
    msg = parsed(data)
    out = apply_edits(msg.raw, [remove_via_value(msg.wire, msg.vias, msg.vias[0])])
    assert out == data.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp1\r\n", b"")


def test_response_with_our_via_first_on_a_comma_joined_line_is_relayed_without_it() -> None:
    """SIPp style `Via: ours, theirs` on one line: the relayed response keeps only theirs."""
    core = make_core()
    core.receive(invite(), PBX_SOURCE, 0.0)
    (forwarded,) = sent_to(core.datagrams_to_send(), TRUNK)
    fwd = parse_message(forwarded, datagram=True)
    ours, theirs = (forwarded[v.start : v.end] for v in fwd.vias)
    head = (
        b"SIP/2.0 180 Ringing\r\nVia: " + ours + b", " + theirs + b"\r\n"
        + b"".join(
            forwarded[h.start : h.end]
            for h in fwd.wire.headers
            if h.name in ("from", "to", "call-id", "cseq", "record-route")
        )
    )
    to = b"To: <sip:00442079460000@127.0.0.1>"
    ringing = head.replace(to, to + b";tag=t") + b"Content-Length: 0\r\n\r\n"
    core.receive(ringing, TRUNK_SOURCE, 0.1)
    (relayed,) = sent_to(core.datagrams_to_send(), PBX)
    assert b"\r\nVia: " + theirs + b"\r\n" in relayed
    assert ours not in relayed
    assert parse_message(relayed, datagram=True).from_addr.uri == "sip:1001@pbx.example.com"


# ----------------------------------------------------------------------------- grammar pieces
@pytest.mark.parametrize(
    ("value", "display", "uri", "tag"),
    [
        ('"Alice" <sip:a@example.com>;tag=1', '"Alice"', "sip:a@example.com", "1"),
        ("Alice Smith <sip:a@example.com>", "Alice Smith", "sip:a@example.com", None),
        ("<sip:a@example.com>;tag=x;other", None, "sip:a@example.com", "x"),
        ("sip:a@example.com;tag=2", None, "sip:a@example.com", "2"),
        ("  <tel:+3228880000>", None, "tel:+3228880000", None),
        ('"quote \\" inside" <sips:b@h:5061>', '"quote \\" inside"', "sips:b@h:5061", None),
    ],
)
def test_name_addr(value: str, display: str | None, uri: str, tag: str | None) -> None:
    addr = parse_name_addr(value, 100)
    assert (addr.display_name, addr.uri, addr.tag) == (display, uri, tag)
    assert value[addr.uri_start - 100 : addr.uri_end - 100] == uri


@pytest.mark.parametrize(
    "value",
    [
        '"unclosed <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "sip:a@b?Subject=x",
        "<sip:a@b> junk",
        "<sip:a@b>;;;;",
    ],
)
def test_name_addr_refusals(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_name_addr(value)


@pytest.mark.parametrize(
    ("uri", "user", "host", "port"),
    [
        ("sip:alice@example.com", "alice", "example.com", None),
        ("sip:alice:pw@EXAMPLE.com:5070;transport=tcp", "alice", "example.com", 5070),
        ("sip:[2001:db8::1]:5060", None, "[2001:db8::1]", 5060),
        ("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
         "(doesn't-it)@example.com", "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
         "example.com", None),
        ("sip:user;par=u%40example.net@example.com", "user;par=u%40example.net", "example.com",
         None),
        ("tel:+3228880000;phone-context=x", "+3228880000", "", None),
    ],
)
def test_sip_uri(uri: str, user: str | None, host: str, port: int | None) -> None:
    parsed_uri = parse_sip_uri(uri)
    assert (parsed_uri.user, parsed_uri.host, parsed_uri.port) == (user, host, port)


def test_via_value_grammar() -> None:
    value = "SIP / 2.0 / udp  Host.Example.com : 5062 ; branch = z9hG4bK1 ; rport"
    via = parse_via_value(value, 10, 3)
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "host.example.com", 5062,
                                                               "z9hG4bK1")
    assert via.params["rport"] is None and via.header_index == 3
    bad_values = ("SIP/3.0/UDP h", "SIP/2.0/UDP", "SIP/2.0/UDP h;branch=x junk", "SIP/2.0/UDP h:0")
    for bad in bad_values:
        with pytest.raises(BadRequest):
            parse_via_value(bad, 0, 0)


# ----------------------------------------------------------------------------- strictness
@pytest.mark.parametrize(
    ("data", "error", "status"),
    [
        (message(*BASIC, start="OPTIONS sip:bob@example.com SIP/7.0"), VersionNotSupported, 505),
        (message(*BASIC, start="OPTIONS sip:bob@example.com SIP/2.0 "), BadRequest, 400),
        (message(*BASIC, start="OPTIONS <sip:bob@example.com> SIP/2.0"), BadRequest, 400),
        (message(*BASIC, start="OPTIONS sip:bob@example.com HTTP/1.1"), BadRequest, 400),
        (message(*(h for h in BASIC if not h.startswith("Call-ID"))), BadRequest, 400),
        (message(*(h for h in BASIC if not h.startswith("Via"))), BadRequest, 400),
        (message(*BASIC, "To: <sip:x@example.com>"), BadRequest, 400),
        (message(*BASIC[:4], "CSeq: 1 INVITE", *BASIC[5:]), BadRequest, 400),
        (message(*BASIC[:4], "CSeq: 2147483648 OPTIONS", *BASIC[5:]), BadRequest, 400),
        (message(*BASIC[:5], "Max-Forwards: 256"), BadRequest, 400),
        (message(*BASIC, "Contact: sip:a@b?x=y"), BadRequest, 400),
        (message(*BASIC, "no colon here"), BadRequest, 400),
        (message(*BASIC, "Content-Length: 0"), BadRequest, 400),
        (message(*BASIC).replace(b"Content-Length: 0", b"Content-Length: -1"), BadRequest, 400),
        (message(*BASIC).replace(b"Content-Length: 0", b"Content-Length: 5"), BadRequest, 400),
        (message(*BASIC, start="SIP/2.0 4294967301 Big"), UnparseableMessage, 400),
        (message(*BASIC, start=" OPTIONS sip:bob@example.com SIP/2.0"), UnparseableMessage, 400),
        (b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: x\r\n", UnparseableMessage, 400),
    ],
    ids=[
        "version", "trailing-space", "ltgt-uri", "not-sip", "no-call-id", "no-via", "two-to",
        "cseq-method", "cseq-range", "max-forwards-range", "unbracketed-uri-headers",
        "no-colon", "two-content-length", "negative-length", "short-body", "bigcode",
        "indented-start", "no-blank-line",
    ],
)
def test_refusals(data: bytes, error: type[SipError], status: int) -> None:
    refused(data, error, status)


def test_a_refused_request_keeps_its_method_so_that_it_can_be_answered() -> None:
    for start in ("INVITE  sip:user@example.com  SIP/2.0", "INVITE <sip:u@example.com> SIP/2.0"):
        data = message(*BASIC[:4], "CSeq: 1 INVITE", *BASIC[5:], start=start)
        caught = refused(data, BadRequest, 400)
        assert caught.wire is not None
        assert caught.wire.method == "INVITE"


def test_a_status_line_with_empty_or_unicode_reason() -> None:
    reason = "= 2**3 * 5**2 сто".encode()
    for line in (b"SIP/2.0 200 " + reason, b"SIP/2.0 100 "):
        data = line + b"\r\n" + message(*BASIC).split(b"\r\n", 1)[1]
        msg = parsed(data)
        assert not msg.is_request
        assert msg.wire.reason.encode("latin-1") == line[12:]


# ----------------------------------------------------------------------------- edits
def test_edits_touch_only_their_spans() -> None:
    data = message(*BASIC, "Subject:  keep   me ")
    msg = parsed(data)
    mf = msg.wire.one("max-forwards")
    subject = msg.wire.one("subject")
    out = apply_edits(msg.raw, [replace_value(mf, b"69"), remove_header(msg.wire.one("to"))])
    assert out == data.replace(b"Max-Forwards: 70", b"Max-Forwards: 69").replace(
        b"To: <sip:bob@example.com>\r\n", b""
    )
    assert data[subject.start : subject.end] in out
    with pytest.raises(ValueError):
        apply_edits(data, [Edit(10, 20, b"a"), Edit(15, 25, b"b")])
    inserts = apply_edits(b"abc", [Edit(1, 1, b"X"), Edit(1, 1, b"Y")])
    assert inserts == b"aXYbc"

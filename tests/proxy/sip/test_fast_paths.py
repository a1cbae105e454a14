"""The parser's fast paths (issue 6) give what the general grammar gives, and a new INVITE shed
while overloaded is answered from a glance with the very 503 the parsed path would send.

Each fast path is held against the general code it short-cuts: hypothesis draws texts from the
characters that matter (separators, quotes, brackets, blanks, CR/LF) and both must agree, on
the answer or on refusing."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sip import framing, grammar
from proxy.sip import message as message_module
from proxy.sip.addresses import Target
from proxy.sip.core import ProxyCore
from proxy.sip.errors import SipError
from proxy.sip.events import Dropped, Shed
from proxy.sip.message import Header, SipMessage, split_message
from proxy.sip.parse import parse_message, parse_vias
from proxy.sip.responses import build_response
from proxy.sip.untrusted import own_ack_glance, shed_glance, shed_response, trying_glance
from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    invite,
    make_core,
    pbx_cancel,
    response_to,
    sent_to,
    start_line,
)

EXAMPLES = settings(max_examples=2000, deadline=None)


def outcome(run: object, *args: object) -> object:
    """What a parser gives, or the kind of SipError (and status) it refuses with."""
    assert callable(run)
    try:
        return run(*args)
    except SipError as error:
        return (type(error), error.status_code)


# ----------------------------------------------------------------------------- header split
def reference_headers(text: str, position: int) -> list[Header]:
    """The header fields as the original one-regex-per-line parser built them."""
    headers = []
    while position < len(text):
        match = message_module._FIELD.match(text, position)
        assert match is not None
        value = match.group(2)
        value_start = match.start(2)
        stripped = value.lstrip(" \t\r\n")
        value_start += len(value) - len(stripped)
        value = stripped.rstrip(" \t\r\n")
        name = message_module.canonical_name(match.group(1))
        headers.append(
            Header(name, match.start(), match.end(), value_start, value_start + len(value), value)
        )
        position = match.end()
    return headers


def general_split(data: bytes) -> SipMessage:
    return message_module._split_general(data)


def view(wire: SipMessage) -> tuple[object, ...]:
    names = sorted(wire.names())
    return (
        wire.start_line, wire.body_start, list(wire.headers), wire.headers_end,
        wire.first_header_start, names, [wire.positions(name) for name in names],
        [wire.count(name) for name in names],
    )


LINE_PIECES = st.sampled_from(
    ["Via", "v", "FROM", "to", "X-Odd", "Call-ID", "i", "CSeq", "Subject", "Ü", "a b", "", " ",
     "\t", ":", ": ", ":  ", "value", ";tag=1", "  ", "\r", "\n", "\r\n", "\r\n ", ","]
)
HEAD_LINES = st.lists(st.lists(LINE_PIECES, min_size=1, max_size=6).map("".join), max_size=8)


@EXAMPLES
@given(lines=HEAD_LINES, body=st.sampled_from(["", "x", "v=0\r\n"]))
def test_the_crlf_split_agrees_with_the_general_split(lines: list[str], body: str) -> None:
    data = ("OPTIONS sip:a@b SIP/2.0\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n"
            + body).encode("latin-1")
    fast = outcome(lambda: view(split_message(data)))
    general = outcome(lambda: view(general_split(data)))
    assert fast == general


@pytest.mark.parametrize(
    "head",
    [
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP g\r\nTo:  <sip:b@c>  \r\n",
        "X-Empty:\r\nX-Blank:   \r\nSubject:\tfolded\r\n  again\r\ni: abc\r\n",
        "Max-Forwards :70\r\nCONTACT: <sip:a@b>\r\ncall-id: x\r\n",
    ],
)
def test_the_spans_are_those_of_the_original_parser(head: str) -> None:
    data = f"OPTIONS sip:a@b SIP/2.0\r\n{head}\r\n".encode("latin-1")
    wire = split_message(data)
    assert list(wire.headers) == reference_headers(wire._text, wire.first_header_start)
    assert list(wire.headers) == list(general_split(data).headers)


@EXAMPLES
@given(lines=HEAD_LINES)
def test_every_header_is_built_as_the_original_parser_built_it(lines: list[str]) -> None:
    data = ("OPTIONS sip:a@b SIP/2.0\r\n" + "".join(line + "\r\n" for line in lines)
            + "\r\n").encode("latin-1")
    for split in (split_message, general_split):
        wire = outcome(split, data)
        if isinstance(wire, SipMessage):
            reference = reference_headers(wire._text, wire.first_header_start)
            assert list(wire.headers) == reference


@pytest.mark.source_build
def test_a_usual_header_block_takes_the_crlf_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def general(data: bytes) -> SipMessage:
        raise AssertionError("the general split was used")

    monkeypatch.setattr(message_module, "_split_general", general)
    assert split_message(invite()).header_count == 10


# ----------------------------------------------------------------------------- grammar
ADDRESS_PIECES = st.sampled_from(
    ['"Alice"', '"A \\" b"', "Alice", "Bob Smith", " ", "\t", "<", ">", "sip:a@b", "sip:1@h:5060",
     "tel:+1", ";tag=x", ";tag", ";lr", ";a=b;c", "=", "?h=1", ",", '"', "\r\n ", "[::1]", "%41"]
)
ADDRESSES = st.lists(ADDRESS_PIECES, min_size=1, max_size=6).map("".join)


@EXAMPLES
@given(value=ADDRESSES, offset=st.integers(0, 500))
def test_the_usual_name_addr_agrees_with_the_general_grammar(value: str, offset: int) -> None:
    fast = outcome(grammar.parse_name_addr, value, offset)
    general = outcome(grammar._parse_name_addr_general, value, offset, len(value))
    assert fast == general


VIA_PIECES = st.sampled_from(
    ["SIP/2.0/UDP", "SIP/2.0/TCP", "sip/2.0/udp", "SIP/1.0/UDP", "SIP / 2.0 / UDP", " ", "\t",
     "host", "10.0.0.1", "[::1]", ":5060", ":0", ":99999", ";branch=z9hG4bK-1", ";rport",
     ";rport=5060", ";rport=0", ";ttl=300", ";received=::1", ";x", "=", ",", '"q"', "\r\n "]
)
VIAS = st.lists(VIA_PIECES, min_size=1, max_size=7).map("".join)


def general_via(value: str, offset: int) -> object:
    """`parse_via_value` with its whole-value fast regex out of the way."""
    saved = grammar._USUAL_VIA
    grammar._USUAL_VIA = re.compile(r"(?!)")  # matches nothing
    try:
        return outcome(grammar.parse_via_value, value, offset, 3)
    finally:
        grammar._USUAL_VIA = saved


@EXAMPLES
@given(value=VIAS, offset=st.integers(0, 500))
def test_the_usual_via_agrees_with_the_general_grammar(value: str, offset: int) -> None:
    assert outcome(grammar.parse_via_value, value, offset, 3) == general_via(value, offset)


def reference_vias(wire: SipMessage) -> list[grammar.Via]:
    """The Via stack as the original parser read it: every line split at its commas."""
    vias = []
    for position in wire.positions("via"):
        header = wire.header_at(position)
        for start, end in grammar.split_comma_values(header.value):
            value = header.value[start:end]
            vias.append(grammar.parse_via_value(value, header.value_start + start, position))
    return vias


@EXAMPLES
@given(lines=st.lists(VIAS, min_size=1, max_size=4), parse_top=st.booleans())
def test_the_via_stack_agrees_with_a_split_of_every_line(
    lines: list[str], parse_top: bool
) -> None:
    data = ("OPTIONS sip:a@b SIP/2.0\r\n" + "".join(f"Via: {line}\r\n" for line in lines)
            + "\r\n").encode("latin-1")
    wire = outcome(split_message, data)
    if not isinstance(wire, SipMessage):
        return  # the split refused it (a folded first line...): nothing to compare
    reference = outcome(reference_vias, wire)
    top = reference[0] if parse_top and isinstance(reference, list) else None
    assert outcome(parse_vias, wire, top) == reference


URI_PIECES = st.sampled_from(
    ["sip:", "sips:", "SIP:", "tel:", "alice", "+4420", "a;b", "@", ":", "pw", "host.example",
     "10.0.0.1", "[::1]", "[::1", ":5060", ":0", ":99999", ";lr", ";transport=TCP", ";x=",
     ";;", "?h=1", "%41", " ", "\n", "-", "."]
)
URIS = st.lists(URI_PIECES, min_size=1, max_size=7).map("".join)


def general_sip_uri(uri: str) -> object:
    """`parse_sip_uri` with its usual-URI fast regex out of the way."""
    saved = grammar._USUAL_SIP_URI
    grammar._USUAL_SIP_URI = re.compile(r"(?!)")  # matches nothing
    try:
        return outcome(grammar.parse_sip_uri, uri)
    finally:
        grammar._USUAL_SIP_URI = saved


@EXAMPLES
@given(uri=URIS)
def test_the_usual_sip_uri_agrees_with_the_general_grammar(uri: str) -> None:
    assert outcome(grammar.parse_sip_uri, uri) == general_sip_uri(uri)


@pytest.mark.parametrize(
    "uri",
    ["sip:callee@127.0.0.1:5080", "sip:00442079460007@127.0.0.1:5060;user=phone",
     "sips:[::1]:5061;lr;transport=tls", "sip:host.example"],
)
def test_usual_sip_uris_take_the_fast_path(uri: str) -> None:
    assert grammar._USUAL_SIP_URI.fullmatch(uri) is not None
    assert grammar.parse_sip_uri(uri) == general_sip_uri(uri)


LIST_TEXT = st.text(alphabet='<>,;" \tab\\', max_size=40)


@EXAMPLES
@given(value=LIST_TEXT)
def test_comma_lists_without_quotes_split_as_the_character_scan_does(value: str) -> None:
    value = value.replace('"', "")
    assert grammar.split_comma_values(value) == grammar._split_quoted(value, len(value))


def test_a_long_comma_list_is_split_in_linear_time() -> None:
    value = ", ".join(["SIP/2.0/UDP h"] * 4000)  # no bracket: nothing to look back for
    assert len(grammar.split_comma_values(value)) == 4000


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4711 INVITE", (4711, "INVITE")), ("0001 ACK", (1, "ACK")),
     ("2147483647 BYE", (2147483647, "BYE")), ("1\tINFO", (1, "INFO")),
     ("1 X-Custom.Method", (1, "X-Custom.Method"))],
)
def test_cseq(value: str, expected: tuple[int, str]) -> None:
    assert grammar.parse_cseq(value) == expected


@pytest.mark.parametrize(
    "value", ["2147483648 INVITE", "1 INVITE x", "x INVITE", "1", "\u0661 INVITE"]
)
def test_cseq_refusals(value: str) -> None:
    with pytest.raises(SipError) as caught:
        grammar.parse_cseq(value)
    assert caught.value.status_code == 400


# ----------------------------------------------------------------------------- shed at a glance
RETRY_AFTER = (("Retry-After", "5"),)


def bounded(max_transactions: int) -> Clocked:
    core = make_core()
    config = dataclasses.replace(core.config, max_transactions=max_transactions)
    return Clocked(ProxyCore(config, FixedPolicy()))


@pytest.mark.parametrize(
    "request_bytes",
    [
        invite(),
        invite(extra="Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-up;received=10.0.0.9\r\n"),
        invite().replace(b"From:", b"f:").replace(b"To:", b"t:").replace(b"Call-ID:", b"i:"),
        invite().replace(b"To: <sip:00442079460000@127.0.0.1>", b"To:   <sip:a@b>   "),
        invite().replace(b"Via: SIP", b"v:  SIP").replace(b";rport\r\n", b";rport  \r\n"),
        invite().replace(b'From: "Alice" <sip:1001@pbx.example.com>;tag=pbx-tag-1',
                         b"From: sip:1001@pbx.example.com;TAG=Xy"),
        invite(extra="VIA :SIP/2.0/TCP 10.0.0.8;branch=z9hG4bK-8\r\nviaduct: x\r\nTox: 1\r\n"
               "X-Via: SIP/2.0/UDP evil\r\nCseq-Extra: 9\r\n"),
    ],
    ids=["usual", "two vias", "compact", "blanks", "compact via", "addr-spec from", "lookalikes"],
)
def test_the_glance_503_is_the_parsed_paths_503(request_bytes: bytes) -> None:
    seen = shed_glance(request_bytes)
    assert seen is not None
    expected = build_response(
        parse_message(request_bytes, datagram=True).wire, 503, "Service Unavailable", RETRY_AFTER
    )
    assert shed_response(seen, 5) == expected


@pytest.mark.parametrize(
    "request_bytes",
    [
        invite().replace(b"To: <sip:00442079460000@127.0.0.1>", b"To: <sip:a@b>;tag=dialog-1"),
        invite().replace(b"Max-Forwards: 70\r\n", b"Subject: a\r\n folded\r\n"),
        invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"),
        invite().replace(b"Call-ID: call-1@pbx\r\n", b""),
        invite(extra='From: "Eve" <sip:eve@x>;tag=2\r\n'),
        invite(branch="old-2543-branch"),
        invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
        invite().replace(b'From: "Alice" <sip:1001@pbx.example.com>', b'From: "Alice <sip:a@b>'),
        invite().replace(b"INVITE sip:", b"OPTIONS sip:", 1),
    ],
    ids=["to tag", "folding", "bare lf", "no call-id", "two froms", "rfc 2543", "cseq method",
         "bad from", "not an invite"],
)
def test_the_glance_leaves_what_it_cannot_tell_to_the_parse(request_bytes: bytes) -> None:
    assert shed_glance(request_bytes) is None


@pytest.mark.source_build
def test_a_shed_invite_is_answered_from_the_glance_without_a_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocked = bounded(0)

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr("proxy.sip.core.parse_message", no_parse)
    request = invite(branch="z9hG4bK-glance", call_id="glance@pbx")
    (refusal,) = clocked.receive(request, PBX_SOURCE)
    assert refusal.target == PBX
    monkeypatch.undo()
    wire = parse_message(request, datagram=True).wire
    assert refusal.data == build_response(wire, 503, "Service Unavailable", RETRY_AFTER)
    assert clocked.core.counters["shed"] == 1
    assert [e for e in clocked.core.events_to_handle() if isinstance(e, Shed)] == [
        Shed(PBX_SOURCE, "transactions", 5)
    ]
    assert clocked.core.transaction_count == 0


def test_an_invite_the_glance_declines_is_still_shed_before_its_full_validation() -> None:
    """Folding makes the glance decline; the lazy parse still answers 503 without validating
    what the 503 does not copy (a malformed Contact here)."""
    clocked = bounded(0)
    request = invite(extra="Subject: a\r\n folded\r\n").replace(
        b"Contact: <sip:1001@127.0.0.1:5070>", b"Contact: <sip:1001@127.0.0.1:5070"
    )
    assert shed_glance(request) is None
    (refusal,) = clocked.receive(request, PBX_SOURCE)
    assert start_line(refusal.data) == "SIP/2.0 503 Service Unavailable"
    assert clocked.core.counters["shed"] == 1


def test_a_retransmitted_admitted_invite_is_absorbed_not_shed() -> None:
    """At the bound, the INVITE of the call that holds the place comes again: its transaction
    answers it (100 Trying again, RFC 3261 17.2.1), it is not refused as a new call."""
    clocked = bounded(1)
    first = clocked.receive(invite(), PBX_SOURCE)
    assert sent_to(first, TRUNK)
    again = clocked.receive(invite(), PBX_SOURCE, at=0.5)
    assert [start_line(o.data) for o in again] == ["SIP/2.0 100 Trying"]
    assert clocked.core.counters["shed"] == 0
    assert clocked.core.counters["retransmissions_absorbed"] == 1


def test_a_retransmitted_invite_already_answered_gets_its_answer_again_not_a_503() -> None:
    """The trunk refused the call (486, relayed: the server transaction is Completed, RFC 3261
    17.2.1); shedding starts; the PBX, which missed the 486, retransmits the INVITE: it hears
    the 486 again, never a second, different final answer."""
    clocked = bounded(1)
    forwarded = sent_to(clocked.receive(invite(), PBX_SOURCE), TRUNK)[0]
    busy = response_to(forwarded, 486, "Busy Here", to_tag="trunk-1")
    relayed = clocked.receive(busy, TRUNK_SOURCE, at=0.1)
    assert [start_line(o.data) for o in relayed if o.target == PBX] == ["SIP/2.0 486 Busy Here"]
    clocked.core.set_overloaded(True)
    again = clocked.receive(invite(), PBX_SOURCE, at=0.5)
    assert [start_line(o.data) for o in again if o.target == PBX] == ["SIP/2.0 486 Busy Here"]
    assert clocked.core.counters["shed"] == 0


def test_a_reinvite_flows_while_shedding() -> None:
    """A To tag, in a dialog that went through us (our Route, its mark): never shed (only new
    INVITEs are), whatever the glance sees."""
    clocked = bounded(0)
    request = invite().replace(b"To: <sip:00442079460000@127.0.0.1>", b"To: <sip:a@b>;tag=t-1")
    request = request.replace(b"INVITE sip:00442079460000@127.0.0.1:5060 ",  # the remote target
                              b"INVITE sip:callee@127.0.0.1:5080 ")
    mark = clocked.core.config.identity_seal.mark(parse_message(request, datagram=True).call_id)
    request = request.replace(
        b"Max-Forwards:", b"Route: <sip:127.0.0.1:5060;lr;dlg=%s>\r\nMax-Forwards:" % mark.encode()
    )
    out = clocked.receive(request, PBX_SOURCE)
    assert clocked.core.counters["shed"] == 0
    assert not any(start_line(o.data).startswith("SIP/2.0 503") for o in out)


def test_with_every_trunk_down_the_shed_invite_hears_so() -> None:
    clocked = bounded(0)
    clocked.core._trunks.states = [
        dataclasses.replace(state, up=False) for state in clocked.core._trunks.states
    ]
    (refusal,) = clocked.receive(invite(), PBX_SOURCE)
    assert start_line(refusal.data) == "SIP/2.0 503 Service Unavailable"
    assert [e.cause for e in clocked.core.events_to_handle() if isinstance(e, Shed)] == [
        "all trunks down"
    ]


# ----------------------------------------------------------------------------- own ACK at a glance
def ack_of(request: bytes, answer: bytes) -> bytes:
    """The ACK a UAC sends for a non-2xx final answer (RFC 3261 17.1.1.3): the INVITE's
    Request-URI, top Via, From, Call-ID and CSeq number, the answer's To (with its tag)."""
    lines = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    answer_to = next(line for line in answer.split(b"\r\n") if line.lower().startswith(b"to:"))
    kept = [b"ACK " + lines[0].split(b" ", 1)[1]]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"to", b"t"):
            kept.append(answer_to)
        elif name == b"cseq":
            kept.append(line.replace(b"INVITE", b"ACK"))
        elif name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"max-forwards"):
            kept.append(line)
    return b"\r\n".join([*kept, b"Content-Length: 0", b"", b""])


def shed_and_ack(request: bytes) -> tuple[Clocked, bytes]:
    clocked = bounded(0)
    (refusal,) = clocked.receive(request, PBX_SOURCE)
    assert start_line(refusal.data) == "SIP/2.0 503 Service Unavailable"
    return clocked, ack_of(request, refusal.data)


@pytest.mark.parametrize(
    "request_bytes",
    [
        invite(),
        invite().replace(b"From:", b"f:").replace(b"To:", b"t:").replace(b"Call-ID:", b"i:"),
        invite().replace(b"Via: SIP", b"v:  SIP").replace(b";rport\r\n", b";rport  \r\n"),
        invite().replace(b'From: "Alice" <sip:1001@pbx.example.com>;tag=pbx-tag-1',
                         b"From: sip:1001@pbx.example.com;TAG=Xy"),
    ],
    ids=["usual", "compact", "blanks", "addr-spec from"],
)
def test_the_ack_glance_reads_what_the_parse_reads(request_bytes: bytes) -> None:
    _, ack = shed_and_ack(request_bytes)
    seen = own_ack_glance(ack)
    parsed = parse_message(ack, datagram=True)
    assert seen is not None
    top = parsed.vias[0]
    assert seen.key == (top.branch, top.sent_by, "INVITE")
    assert (seen.call_id, seen.from_tag, seen.to_tag) == (
        parsed.call_id, parsed.from_addr.tag, parsed.to_addr.tag
    )


@pytest.mark.parametrize(
    "ack",
    [
        ack_of(invite(), b"To: <sip:00442079460000@127.0.0.1>;tag=trunk-1\r\n"),
        ack_of(invite(), b"To: <sip:a@b>;tag=cp-too-long-for-ours\r\n"),
        ack_of(invite(), b"To: <sip:a@b>;tag=cp0123456789\r\n").replace(b"Max-Forwards: 70",
                                                                       b"Subject: a\r\n b"),
        ack_of(invite(branch="old-2543-branch"), b"To: <sip:a@b>;tag=cp0123456789\r\n"),
        ack_of(invite(), b"To: <sip:a@b>;tag=cp0123456789\r\n").replace(b"1 ACK", b"1 BYE"),
        ack_of(invite(), b"To: <sip:a@b>;tag=cp0123456789\r\n").replace(
            b"Call-ID: call-1@pbx\r\n", b""
        ),
        ack_of(invite(), b"To: <sip:a@b>;tag=cp0123456789\r\n").replace(b"ACK sip:", b"BYE sip:"),
    ],
    ids=["callee tag", "not our length", "folding", "rfc 2543", "cseq method", "no call-id",
         "not an ack"],
)
def test_the_ack_glance_leaves_what_it_cannot_tell_to_the_parse(ack: bytes) -> None:
    assert own_ack_glance(ack) is None


@pytest.mark.parametrize(
    "data",
    [b"ACK sip:a@b SIP/2.0\r\n\r\n;tag=cp0123456789", b"INVITE sip:a@b SIP/2.0\r\n\r\n",
     b"ACK sip:a@b SIP/2.0\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\n\r\nv: x\r\n\r\n"],
    ids=["ack, tag in the body", "invite", "ack", "invite, lines in the body"],
)
def test_a_start_line_alone_is_left_to_the_parse(data: bytes) -> None:
    """No header line before the blank line (a slice from past its end: compiled by mypyc it
    raised SystemError, a traceback per such packet, found by the live fuzz test)."""
    assert own_ack_glance(data) is None and shed_glance(data) is None
    clocked = bounded(0)  # shedding: the INVITE glance is asked too
    clocked.receive(data, PBX_SOURCE)  # answered or refused as the parse says, never raising


def test_the_ack_of_a_shed_invite_ends_here_from_the_glance() -> None:
    clocked, ack = shed_and_ack(invite(branch="z9hG4bK-shed-ack", call_id="shed-ack@pbx"))
    clocked.core.events_to_handle()
    assert clocked.receive(ack, PBX_SOURCE, at=0.01) == []
    assert clocked.core.counters["acks_of_our_answers"] == 1
    assert clocked.core.events_to_handle() == []  # nothing dropped or refused: it was ours


@pytest.mark.source_build
def test_the_ack_of_a_shed_invite_needs_no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    clocked, ack = shed_and_ack(invite(branch="z9hG4bK-no-parse", call_id="no-parse@pbx"))

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr("proxy.sip.core.parse_message", no_parse)
    assert clocked.receive(ack, PBX_SOURCE, at=0.01) == []
    assert clocked.core.counters["acks_of_our_answers"] == 1


def test_an_ack_with_a_tag_like_ours_but_not_ours_goes_the_usual_way() -> None:
    """A To tag of our shape that `own_to_tag` did not make for this Call-ID and From tag: not
    the ACK of our answer; the usual path judges it (forwarded as an ACK of the dialog)."""
    clocked = bounded(0)
    ack = ack_of(invite(), b"To: <sip:00442079460000@127.0.0.1>;tag=cp0123456789\r\n")
    assert own_ack_glance(ack) is not None
    clocked.receive(ack, PBX_SOURCE)
    assert clocked.core.counters["acks_of_our_answers"] == 0


def test_the_ack_of_our_stateful_408_still_reaches_its_transaction() -> None:
    """Timer B's 408 is sent by the INVITE server transaction (RFC 3261 17.2.1), with our To
    tag: its ACK moves that transaction to Confirmed and stops Timer G, glance or not."""
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    clocked.advance(31.9)
    ((_, timeout),) = clocked.advance(32.0)
    ack = ack_of(invite(), timeout.data)
    assert own_ack_glance(ack) is not None
    assert clocked.receive(ack, PBX_SOURCE, at=32.1) == []
    assert [o for _, o in clocked.advance(40.0) if o.data.startswith(b"SIP/2.0 408")] == []


# ----------------------------------------------------------------------------- a trunk's 100
def trying_for(forwarded: bytes, extra: str = "") -> bytes:
    return response_to(forwarded, 100, "Trying", to_tag=None, extra=extra)


def forwarded_once() -> bytes:
    return forwarded_invite(Clocked(make_core()))


HIDDEN_VIA = b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcpHIDDEN"
# The PBX's Via, second in the stack of a 100 to a forwarded `invite()`.
SECOND_VIA = b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5070"


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r,
        lambda r: r.replace(b"Via:", b"v:").replace(b"Call-ID:", b"i:").replace(b"From:", b"f:"),
        lambda r: r.replace(b"Via: SIP", b"VIA :  SIP").replace(b"CSeq: 1", b"CSeq:\t1"),
        lambda r: r.replace(b"CSeq: 1 INVITE", b"CSeq: 1 INVITE \t"),
        lambda r: r.replace(b"Content-Length: 0", b"Server: x\r\nContent-Length: 0"),
        lambda r: r.replace(b"Content-Length: 0", b"Via-X: SIP/2.0/UDP evil;branch=z9hG4bKcpX\r\n"
                            b"vv: 1\r\nCSeqs: 9 BYE\r\nContent-Length: 0"),
        lambda r: r.replace(b"Record-Route: <", b"Record-Route: <<"),  # never read, never sent
        lambda r: r.replace(b"Content-Length: 0", b"l: 0"),
    ],
    ids=["usual", "compact", "blanks", "trailing blanks", "more lines", "lookalike names",
         "bad record-route", "compact content-length"],
)
def test_the_trying_glance_reads_what_the_parse_reads(change: Callable[[bytes], bytes]) -> None:
    trying = change(trying_for(forwarded_once()))
    seen = trying_glance(trying)
    parsed = parse_message(trying, datagram=True, lazy=True)
    assert seen is not None
    assert (seen.branch, seen.method, seen.host) == (
        parsed.top_via.branch, parsed.cseq_method, parsed.top_via.host
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.replace(b"SIP/2.0 100 Trying", b"SIP/2.0 180 Ringing"),
        lambda r: r.replace(b"Content-Length: 0", b"Server: a\r\n folded\r\nContent-Length: 0"),
        # a bare LF or CR before our Via: the general split sees a line the glance would not
        lambda r: r.replace(b"\r\nVia: ", b"\r\nX: a\n" + HIDDEN_VIA + b"\r\nVia: ", 1),
        lambda r: r.replace(b"\r\nVia: ", b"\r\nX: a\r" + HIDDEN_VIA + b"\r\nVia: ", 1),
        lambda r: r.replace(b"CSeq: 1 INVITE", b"CSeq: 1 INVITE\r\nCSeq: 2 INVITE"),
        lambda r: r.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"),
        lambda r: re.sub(rb"CSeq: [^\r]*\r\n", b"", r),
        lambda r: r.replace(b";branch=z9hG4bKcp", b";branch=z9hG4bK-theirs", 1),
        lambda r: r.replace(b";rport\r\nVia: SIP/2.0/UDP 127.0.0.1:5070",
                            b";rport, SIP/2.0/UDP 127.0.0.1:5070", 1),  # the parse splits it
        lambda r: r.split(b"\r\n\r\n")[0],  # no end of the header block
        # RFC 3261 18.3: a response shorter than its Content-Length MUST be discarded
        lambda r: r.replace(b"Content-Length: 0", b"Content-Length: 10"),
        lambda r: r.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"),
        lambda r: r.replace(b"Content-Length: 0", b"Content-Length: zero"),
    ],
    ids=["a 180", "folding", "bare lf", "bare cr", "two cseqs", "bad cseq", "no cseq",
         "not our branch", "comma-joined vias", "unfinished", "truncated", "two lengths",
         "bad length"],
)
def test_the_trying_glance_leaves_what_it_cannot_tell_to_the_parse(
    change: Callable[[bytes], bytes],
) -> None:
    trying = trying_for(forwarded_once())
    assert trying_glance(trying) is not None  # the unchanged 100 is read
    assert trying_glance(change(trying)) is None


def test_a_bare_lf_hides_a_via_the_parse_would_read_first() -> None:
    """Why the glance declines a bare LF: the general split takes `X: a\nVia: ...` as two lines
    (RFC 3261 7: a recipient may accept LF alone), so the parse's top Via is the hidden one."""
    trying = trying_for(forwarded_once())
    hidden = trying.replace(b"\r\nVia: ", b"\r\nX: a\n" + HIDDEN_VIA + b"\r\nVia: ", 1)
    assert parse_message(hidden, datagram=True, lazy=True).top_via.branch == "z9hG4bKcpHIDDEN"


TRYING_PIECES = st.sampled_from(
    ["Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp1", "v: SIP/2.0/TCP [::1];branch=z9hG4bKcpA",
     "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-up", "Via: SIP/2.0/UDP a, SIP/2.0/UDP b",
     "CSeq: 1 INVITE", "CSeq: 2 BYE", "cseq:  3\tOPTIONS ", "From: <sip:a@b>;tag=1",
     "f: sip:a@b", "To: <sip:b@c>", "t: x", "Call-ID: c@x", "i: d", "Server: s",
     "Content-Length: 0", "l: 0", " folded", "Via :SIP/2.0/UDP h;branch=z9hG4bKcp9;rport",
     "Via-X: SIP/2.0/UDP e;branch=z9hG4bKcpE", "vv: SIP/2.0/UDP e;branch=z9hG4bKcpV",
     "CSeqs: 4 BYE", "X: a\nVia: SIP/2.0/UDP lf;branch=z9hG4bKcpLF",
     "X: a\rcseq: 5 CANCEL", "Via: SIP/2.0/UDP q;branch=z9hG4bKcpQ;x=\"a,b\""]
)


@EXAMPLES
@given(lines=st.lists(TRYING_PIECES, max_size=10))
def test_the_trying_glance_agrees_with_the_parse_whenever_both_read(lines: list[str]) -> None:
    dialog = "From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c@x\r\n"  # so most parse
    data = "SIP/2.0 100 Trying\r\n" + "".join(f"{line}\r\n" for line in lines) + dialog + "\r\n"
    seen = trying_glance(data.encode())
    if seen is None:
        return
    try:
        parsed = parse_message(data.encode(), datagram=True, lazy=True)
    except SipError:
        return  # e.g. no From: refused by the parse, absorbed by the glance (never relayed)
    assert (seen.branch, seen.method, seen.host) == (
        parsed.top_via.branch, parsed.cseq_method, parsed.top_via.host
    )


def after_trying(
    trying_of: Callable[[bytes], bytes], *, ringing_first: bool = False
) -> tuple[list[tuple[float, str, Target]], dict[str, int], list[object]]:
    """What the core sends in the four minutes after the trunk's 100 (from `trying_of`), its
    counters, and its events from the 100 on."""
    clocked = Clocked(make_core())
    forwarded = forwarded_invite(clocked)
    if ringing_first:
        clocked.receive(response_to(forwarded, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    clocked.core.events_to_handle()
    assert sent_to(clocked.receive(trying_of(forwarded), TRUNK_SOURCE, at=0.2), PBX) == []
    sent = [(at, start_line(out.data), out.target) for at, out in clocked.advance(240.0)]
    return sent, dict(clocked.core.counters), list(clocked.core.events_to_handle())


FOLDED = "Server: a\r\n folded"  # the glance declines it; the parse reads it


@pytest.mark.parametrize("ringing_first", [False, True], ids=["first", "after a 180"])
def test_a_100_read_at_a_glance_moves_the_transaction_as_a_parsed_100_does(
    ringing_first: bool,
) -> None:
    """Both stop the INVITE's retransmissions and arm Timer C at the first provisional (RFC 3261
    17.1.1.2, 16.6 step 11), which then cancels the call (16.8) the same way; after a 180 a
    100 leaves Timer C as it is (16.7 step 2 resets it for a 101-199 only). Only the counter of
    100s read at a glance tells the two apart."""
    assert trying_glance(trying_for(forwarded_once(), FOLDED)) is None
    glanced_sent, glanced_counts, glanced_events = after_trying(
        trying_for, ringing_first=ringing_first
    )
    parsed_sent, parsed_counts, parsed_events = after_trying(
        lambda forwarded: trying_for(forwarded, FOLDED), ringing_first=ringing_first
    )
    assert glanced_sent == parsed_sent
    assert glanced_events == parsed_events
    assert glanced_counts.pop("trying_glanced") == 1 and "trying_glanced" not in parsed_counts
    assert glanced_counts == parsed_counts
    cancels = [at for at, line, _ in glanced_sent if line.startswith("CANCEL ")]
    assert cancels[0] == pytest.approx(0.1 + 180.0 if ringing_first else 0.2 + 180.0)
    assert all(at >= 180.0 for at, _, _ in glanced_sent)  # no INVITE retransmission after it


def test_a_pending_cancel_goes_out_on_a_100_read_at_a_glance() -> None:
    """RFC 3261 9.1: a CANCEL waits for a provisional; the glanced 100 releases it."""
    clocked = Clocked(make_core())
    forwarded = forwarded_invite(clocked)
    clocked.receive(pbx_cancel(), PBX_SOURCE, at=0.1)
    (cancel,) = sent_to(clocked.receive(trying_for(forwarded), TRUNK_SOURCE, at=0.2), TRUNK)
    assert start_line(cancel).startswith("CANCEL ")
    assert clocked.core.counters["trying_glanced"] == 1


def test_a_100_from_the_pbx_side_to_an_inbound_call_is_read_at_a_glance() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(invite(), TRUNK_SOURCE)  # an inbound call: forwarded to the PBX
    (forwarded,) = sent_to(out, PBX)
    assert clocked.receive(trying_for(forwarded), PBX_SOURCE, at=0.1) == []
    assert clocked.core.counters["trying_glanced"] == 1
    assert [o for _, o in clocked.advance(10.0) if o.target == PBX] == []  # Timer A stopped


@pytest.mark.source_build
def test_a_trunks_100_needs_no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    clocked = Clocked(make_core())
    trying = trying_for(forwarded_invite(clocked))
    clocked.core.events_to_handle()  # the INVITE's

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr("proxy.sip.core.parse_message", no_parse)
    assert clocked.receive(trying, TRUNK_SOURCE, at=0.1) == []
    assert clocked.core.events_to_handle() == []
    assert clocked.advance(10.0) == []  # Timer A stopped


def test_a_100_no_live_transaction_knows_goes_the_full_way() -> None:
    """A 100 for a branch of ours no client transaction holds (a restart, a late copy): the
    glance reads it, the layer does not know it, and the parse drops it as a stray 100."""
    clocked = Clocked(make_core())
    stray = trying_for(forwarded_once())  # another core's INVITE
    assert trying_glance(stray) is not None
    clocked.core.events_to_handle()
    assert clocked.receive(stray, TRUNK_SOURCE, at=0.1) == []
    assert [e.reason for e in clocked.core.events_to_handle() if isinstance(e, Dropped)] == [
        "stray 100"
    ]
    assert clocked.core.counters["trying_glanced"] == 0


def test_a_late_100_after_the_final_is_absorbed_by_the_finished_transaction() -> None:
    """After the 486 the client transaction is retired (Completed, Timer D): a late 100 for it
    goes the full way and the record absorbs it, no stray drop (RFC 3261 17.1.1.2)."""
    clocked = Clocked(make_core())
    forwarded = forwarded_invite(clocked)
    clocked.receive(response_to(forwarded, 486, "Busy Here"), TRUNK_SOURCE, at=0.1)
    clocked.core.events_to_handle()
    assert clocked.receive(trying_for(forwarded), TRUNK_SOURCE, at=0.2) == []
    assert [e for e in clocked.core.events_to_handle() if isinstance(e, Dropped)] == []
    assert clocked.core.counters["trying_glanced"] == 0


def test_a_truncated_100_is_dropped_as_before() -> None:
    """RFC 3261 18.3: over UDP a response shorter than its Content-Length MUST be discarded; the
    glance declines it and the parse refuses it, so Timer A keeps running."""
    clocked = Clocked(make_core())
    forwarded = forwarded_invite(clocked)
    truncated = trying_for(forwarded).replace(b"Content-Length: 0", b"Content-Length: 10")
    clocked.core.events_to_handle()
    assert clocked.receive(truncated, TRUNK_SOURCE, at=0.1) == []
    assert [type(e).__name__ for e in clocked.core.events_to_handle()] == ["Dropped"]
    resent = [start_line(out.data).split()[0] for _, out in clocked.advance(0.6)]
    assert resent == ["INVITE"]


def test_a_100_whose_top_via_is_not_ours_is_dropped_as_before() -> None:
    clocked = Clocked(make_core())
    forwarded = forwarded_invite(clocked)
    foreign = trying_for(forwarded).replace(b"127.0.0.1:5060;branch", b"192.0.2.7:5060;branch", 1)
    assert trying_glance(foreign) is not None
    clocked.core.events_to_handle()
    assert clocked.receive(foreign, TRUNK_SOURCE, at=0.1) == []
    assert [e.reason for e in clocked.core.events_to_handle() if isinstance(e, Dropped)] == [
        "not our via"
    ]
    resent = [start_line(out.data).split()[0] for _, out in clocked.advance(0.6)]
    assert resent == ["INVITE"]  # Timer A still runs: that 100 was not for us


# ----------------------------------------------------------------------------- stream framing
OLD_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
STREAM_PIECES = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n", b"Content-Length: 12", b"l:3", b"L :\t7 ",
     b"content-LENGTH:", b"x-l: 1", b"INVITE sip:a@b SIP/2.0", b" ", b"abc", b":"]
)


@EXAMPLES
@given(pieces=st.lists(STREAM_PIECES, max_size=12))
def test_the_framers_fast_paths_agree_with_its_regexes(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    old = framing._HEADER_END.search(data)
    assert framing._header_end(bytearray(data)) == (None if old is None else old.span())
    if old is not None:
        expected = OLD_CONTENT_LENGTH.findall(data[: old.start()] + b"\r\n")
        assert framing._content_lengths(data[: old.end()], old.start()) == expected

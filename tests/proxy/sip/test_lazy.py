"""Lazy parsing (issue 6): what every message needs is parsed on the way in, the rest when asked
for; a message the proxy forwards is still validated in full (RFC 3261 16.3, RFC 4475)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sip import grammar
from proxy.sip import message as message_module
from proxy.sip.errors import BadRequest
from proxy.sip.message import Header
from proxy.sip.parse import parse_message
from tests.proxy.sip.support import (
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    invite,
    make_core,
    sent_to,
    start_line,
)

EXTRA = (
    "Allow: INVITE, ACK, BYE, CANCEL\r\n"
    "Supported: 100rel, timer\r\n"
    "User-Agent: Asterisk PBX 20.5.0\r\n"
)
NEVER_READ = {"allow", "supported", "user-agent", "content-type"}  # PPI: the rewrite edits it


def test_a_lazy_parse_builds_only_the_fields_every_message_needs() -> None:
    msg = parse_message(invite(extra=EXTRA), datagram=True, lazy=True)
    assert set(msg.wire.built_names()) == {"call-id", "cseq", "via", "content-length",
                                           "max-forwards"}  # fmt: skip
    assert msg.top_via.branch == "z9hG4bK-inv-1"
    assert msg.from_addr.tag == "pbx-tag-1"  # on demand, then cached
    assert msg.wire.built_names().count("from") == 1
    assert msg.from_addr is msg.from_addr


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the header fields the parser builds, in order (the source build only:
    the compiled core calls `_build_header` directly, past the patch)."""
    names: list[str] = []
    real = message_module._build_header

    def recording(text: str, name: str, start: int, end: int, colon: int) -> Header:
        names.append(name)
        return real(text, name, start, end, colon)

    monkeypatch.setattr(message_module, "_build_header", recording)
    return names


@pytest.mark.source_build
def test_a_forwarded_invite_never_builds_the_fields_nobody_reads(built: list[str]) -> None:
    request = invite(extra=EXTRA)
    core = make_core()
    core.receive(request, PBX_SOURCE, 0.0)
    (forwarded,) = sent_to(core.datagrams_to_send(), TRUNK)
    assert NEVER_READ.isdisjoint(built), sorted(set(built) & NEVER_READ)
    for line in EXTRA.split("\r\n")[:-1]:
        assert line.encode() in forwarded  # and they leave byte-identical


@pytest.mark.parametrize(
    "fault",
    [
        ("Contact: <sip:1001@127.0.0.1:5070>", "Contact: <sip:1001@127.0.0.1:5070"),
        ('From: "Alice" <sip:1001@pbx.example.com>', 'From: "Alice <sip:1001@pbx.example.com>'),
        ("Max-Forwards: 70", "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-x;rport=99999\r\n"
         "Max-Forwards: 70"),
        ("Max-Forwards: 70", "Expires: 99999999999\r\nMax-Forwards: 70"),
    ],
    ids=["contact", "from", "lower via", "expires"],
)
def test_the_deferred_grammar_is_still_checked_before_forwarding(fault: tuple[str, str]) -> None:
    old, new = fault
    request = invite().replace(old.encode(), new.encode(), 1)
    msg = parse_message(request, datagram=True, lazy=True)  # what every message needs is fine
    with pytest.raises(BadRequest):
        msg.validate()
    with pytest.raises(BadRequest):
        parse_message(request, datagram=True)
    core = make_core()
    core.receive(request, PBX_SOURCE, 0.0)
    assert [start_line(o.data) for o in core.datagrams_to_send()] == ["SIP/2.0 400 Bad Request"]


def test_the_via_stack_is_parsed_on_demand_and_starts_with_the_top_via() -> None:
    extra = (
        "Via: SIP/2.0/TCP 10.0.0.2:5061;branch=z9hG4bK-b, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-c\r\n"
    )
    msg = parse_message(invite(extra=extra), datagram=True, lazy=True)
    assert [via.host for via in msg.vias] == ["127.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert msg.vias[0] is msg.top_via


def test_lazy_and_eager_parses_are_equal() -> None:
    data = invite(extra=EXTRA)
    assert parse_message(data, datagram=True, lazy=True) == parse_message(data, datagram=True)


def test_headers_is_a_sequence_that_builds_what_is_read() -> None:
    wire = parse_message(invite(extra=EXTRA), datagram=True, lazy=True).wire
    by_the_parse = wire.built_names()
    assert wire.headers[-1].name == "content-length"
    assert wire.built_names() == by_the_parse  # already built by the parse
    assert "allow" not in by_the_parse
    assert wire.headers[8].name == "allow"
    assert sorted(wire.built_names()) == sorted([*by_the_parse, "allow"])
    assert [h.name for h in wire.headers[:2]] == ["via", "max-forwards"]
    assert len(wire.headers) == wire.header_count == 13
    with pytest.raises(IndexError):
        wire.headers[13]


# ----------------------------------------------------------------------------- fast paths
PARAM_TEXT = st.text(alphabet=';=:.[]"ab1 -\tZ', max_size=40)


@settings(max_examples=3000, deadline=None)
@given(text=PARAM_TEXT)
def test_the_simple_params_fast_path_agrees_with_the_general_parser(text: str) -> None:
    assert grammar._parse_params(text, 0, len(text)) == grammar.parse_params_general(
        text, 0, len(text)
    )


@pytest.mark.parametrize(
    "text", [";tag=1", ";branch=z9hG4bK-1;rport", ";received=::1;rport=5060", ";maddr=[::1]",
             ";a;b=c;A=d", ""],
)
def test_simple_params_take_the_fast_path_with_the_same_answer(text: str) -> None:
    assert grammar._SIMPLE_PARAMS.fullmatch(text) is not None
    assert grammar._parse_params(text, 0, len(text)) == grammar.parse_params_general(
        text, 0, len(text)
    )


def test_a_response_with_our_via_is_validated_even_a_100() -> None:
    """A 100 without a transaction can still be relayed statelessly: it gets the whole grammar
    (found by the core fuzz: a 100 with a 2**32 Retry-After left unchecked and relayed)."""
    ours = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp00112233445566778899;rport"
    upstream = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-stray;rport=5070"
    response = (
        f"SIP/2.0 100 Trying\r\nVia: {ours}\r\nVia: {upstream}\r\n"
        "From: <sip:a@pbx.example.com>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
        f"Call-ID: stray-100@x\r\nCSeq: 1 INVITE\r\nRetry-After: {2**32}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    core = make_core()
    core.receive(response, TRUNK_SOURCE, 0.0)
    assert core.datagrams_to_send() == []

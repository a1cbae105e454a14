"""Who may call, and the RFC 3261 16.3 checks: refused requests are answered, not forwarded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from proxy.sip.addresses import Source
from proxy.sip.core import ProxyCore
from proxy.sip.policy import ProxyConfig
from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    SECRET,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    in_dialog,
    invite,
    make_core,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

STRANGER = Source("udp", "10.9.9.9", 5060)  # a value only: nothing is sent anywhere


def options() -> bytes:
    return in_dialog(
        "OPTIONS",
        uri="sip:trunk.example.com",
        via="SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-opt-x",
        from_="<sip:scanner@10.9.9.9>;tag=x",
        to="<sip:trunk.example.com>",
        cseq=1,
    )


def with_uri(uri: str) -> bytes:
    return invite().replace(b"INVITE sip:00442079460000@127.0.0.1:5060 ", f"INVITE {uri} ".encode())


@dataclass(frozen=True)
class Refusal:
    name: str
    request: bytes
    source: Source
    status: str
    extra: tuple[tuple[str, str], ...] = ()


REFUSALS = [
    Refusal("untrusted INVITE", invite(), STRANGER, "403 Forbidden"),
    Refusal("untrusted OPTIONS", options(), STRANGER, "403 Forbidden"),
    Refusal("untrusted, PBX port on another host", invite(), Source("udp", "10.9.9.9", 5070),
            "403 Forbidden"),
    Refusal("Max-Forwards 0", invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"),
            PBX_SOURCE, "483 Too Many Hops"),
    Refusal("Max-Forwards 0 from the trunk",
            invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), TRUNK_SOURCE,
            "483 Too Many Hops"),
    Refusal("Proxy-Require", invite(extra="Proxy-Require: foo\r\n"), PBX_SOURCE,
            "420 Bad Extension", (("Unsupported", "foo"),)),
    Refusal("two Proxy-Require options", invite(extra="Proxy-Require: foo, bar\r\n"), PBX_SOURCE,
            "420 Bad Extension", (("Unsupported", "foo, bar"),)),
    Refusal("mailto R-URI", with_uri("mailto:alice@example.com"), PBX_SOURCE,
            "416 Unsupported URI Scheme"),
    Refusal("http R-URI", with_uri("http://example.com/x"), PBX_SOURCE,
            "416 Unsupported URI Scheme"),
    Refusal("unknown scheme from the trunk", with_uri("im:alice@example.com"), TRUNK_SOURCE,
            "416 Unsupported URI Scheme"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[case.name for case in REFUSALS])
def test_refused_request_is_answered_and_nothing_is_forwarded(case: Refusal) -> None:
    policy = FixedPolicy()
    clocked = Clocked(make_core(policy))
    out = clocked.receive(case.request, case.source)
    assert [(o.target, start_line(o.data)) for o in out] == [
        (case.source.reply_target(), f"SIP/2.0 {case.status}")
    ]
    answer = out[0].data
    assert values(answer, "Via") == values(case.request, "Via")
    assert value(answer, "From") == value(case.request, "From")
    assert value(answer, "Call-ID") == value(case.request, "Call-ID")
    assert value(answer, "CSeq") == value(case.request, "CSeq")
    assert value(answer, "To").startswith(value(case.request, "To") + ";tag=")
    for name, expected in case.extra:
        assert values(answer, name) == [expected]
    assert policy.calls == []
    assert clocked.advance(100.0) == []  # no transaction was created
    assert clocked.core.transaction_count == 0
    assert clocked.core.counters[f"refused_{case.status[:3]}"] == 1


def test_refusal_is_the_same_for_a_retransmission() -> None:
    clocked = Clocked(make_core())
    first = clocked.receive(invite(), STRANGER)
    again = clocked.receive(invite(), STRANGER, at=0.5)
    assert [o.data for o in again] == [o.data for o in first]


def test_a_trusted_network_may_place_outbound_calls() -> None:
    config = ProxyConfig(
        advertised=make_core().config.advertised, pbx=PBX, trunk=TRUNK, secret=SECRET,
        trusted=(ipaddress.ip_network("10.9.0.0/16"),),
    )
    policy = FixedPolicy()
    clocked = Clocked(ProxyCore(config, policy))
    out = clocked.receive(invite(), STRANGER)
    (forwarded,) = sent_to(out, TRUNK)
    assert value(forwarded, "From") == '"+3228880001" <sip:+3228880001@127.0.0.1>;tag=pbx-tag-1'
    assert [o.target for o in out if o.data.startswith(b"SIP/2.0 100")] == [
        STRANGER.reply_target()
    ]
    assert policy.calls == [("1001", "00442079460000")]


def test_the_pbx_host_is_trusted_on_any_port() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(invite(), Source("udp", PBX.host, 6000))
    assert len(sent_to(out, TRUNK)) == 1


def test_an_ack_from_an_untrusted_source_is_dropped_silently() -> None:
    clocked = Clocked(make_core())
    ack = in_dialog(
        "ACK", uri="sip:x@127.0.0.1", via="SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK-a",
        from_="<sip:a@b>;tag=1", to="<sip:c@d>;tag=2", cseq=1,
    )
    assert clocked.receive(ack, STRANGER) == []


def test_a_response_from_an_untrusted_source_is_dropped() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ringing = response_to(fwd, 180, "Ringing")
    ok = response_to(fwd, 200, "OK")
    assert clocked.receive(ok, STRANGER, at=0.1) == []
    assert clocked.core.counters["dropped"] == 1
    # the real trunk is still heard: the transaction was not disturbed
    assert len(sent_to(clocked.receive(ringing, TRUNK_SOURCE, at=0.2), PBX)) == 1


def test_max_forwards_1_is_forwarded_with_0() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked, invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 1"))
    assert value(fwd, "Max-Forwards") == "0"


# ------------------------------------------------------------ control octets (RFC 3261 25.1)
@pytest.mark.parametrize(("source", "old", "new"), [
    (PBX_SOURCE, b"Call-ID: call-1@pbx", b"Call-ID: call-1\x00@pbx"),
    (PBX_SOURCE, b'"Alice" <sip:1001@', b'"Alice" <sip:1001\x1b[2J@'),
    (PBX_SOURCE, b"Max-Forwards: 70\r\n",  # a bare CR: a line end to some parsers, not to us
     b"Max-Forwards: 70\r\nSubject: x\rP-Asserted-Identity: <sip:+19005551234@h>\r\n"),
    (PBX_SOURCE, b"To: <sip:00442079460000@127.0.0.1>", b"To: <sip:0044\x7f2079460000@127.0.0.1>"),
    (TRUNK_SOURCE, b"Call-ID: call-1@pbx", b"Call-ID: call-1\x08@pbx"),
], ids=["nul-call-id", "esc-from-user", "bare-cr", "del-to", "trunk-bs-call-id"])
def test_a_control_octet_in_the_header_fields_is_refused(source: Source, old: bytes,
                                                         new: bytes) -> None:
    clocked = Clocked(make_core())
    request = invite().replace(old, new, 1)
    assert request != invite()
    out = clocked.receive(request, source)
    assert sent_to(out, TRUNK if source is PBX_SOURCE else PBX) == []
    # (a bare CR makes its line unsplittable: that 400 comes from a glance)
    assert [start_line(o.data) for o in out] == ["SIP/2.0 400 Bad Request"]


def test_lf_only_lines_are_read_but_a_control_octet_there_refused_too() -> None:
    """Bare LF line ends (RFC 3261 7.5 leniency) take the split's other path, and its check."""
    clocked = Clocked(make_core())
    head, body = invite().split(b"\r\n\r\n", 1)
    lf_only = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    assert len(sent_to(clocked.receive(lf_only, PBX_SOURCE), TRUNK)) == 1
    hostile = lf_only.replace(b"Call-ID: call-1@pbx", b"Call-ID: call-2\x00@pbx")
    out = clocked.receive(hostile.replace(b"branch=z9hG4bK-inv-1", b"branch=z9hG4bK-inv-2"),
                          PBX_SOURCE, at=0.1)
    assert [start_line(o.data) for o in out] == ["SIP/2.0 400 Bad Request"]


@pytest.mark.parametrize("display", [b'"A\\\x00B"', b'"tab\there"'],
                         ids=["quoted-pair-nul", "htab"])
def test_a_quoted_pair_or_a_tab_is_no_control_octet(display: bytes) -> None:
    """RFC 4475's wsinv quotes NUL, BEL and DEL in a display name: legal, forwarded."""
    clocked = Clocked(make_core())
    request = invite().replace(b'"Alice"', display, 1)
    assert len(sent_to(clocked.receive(request, PBX_SOURCE), TRUNK)) == 1


# ---------------------------------------------- a request no split can read (RFC 3261 16.3)
@pytest.mark.parametrize("bad_line", [
    b"this line has no colon\r\n",
    b"X-\xe9t\xe9: 1\r\n",  # a name that is no token
    b": value\r\n",
], ids=["no-colon", "non-token-name", "empty-name"])
def test_a_trusted_request_with_an_unreadable_line_gets_400_from_a_glance(bad_line: bytes) -> None:
    """The split refuses the message; the lines a 400 copies are found by the same bounded
    glance the untrusted path uses: the PBX hears why, instead of retransmitting into silence."""
    clocked = Clocked(make_core())
    request = invite().replace(b"Content-Type:", bad_line + b"Content-Type:")
    out = clocked.receive(request, PBX_SOURCE)
    assert [(o.target, start_line(o.data)) for o in out] == [(PBX, "SIP/2.0 400 Bad Request")]
    (answer,) = out
    assert value(answer.data, "Call-ID") == "call-1@pbx"
    assert value(answer.data, "CSeq") == "1 INVITE"
    assert values(answer.data, "Via") == ["SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport"]
    assert ";tag=cp" in value(answer.data, "To")
    assert clocked.core.counters["refused_400"] == 1


def test_an_unreadable_ack_or_one_without_the_lines_to_copy_is_still_dropped() -> None:
    clocked = Clocked(make_core())
    ack = invite().replace(b"INVITE sip:", b"ACK sip:").replace(b"1 INVITE", b"1 ACK")
    for request in (ack.replace(b"Content-Type:", b"no colon\r\nContent-Type:"),
                    invite().replace(b"Call-ID: call-1@pbx\r\n", b"no colon\r\n")):
        assert clocked.receive(request, PBX_SOURCE) == []
    assert clocked.core.counters["dropped"] == 2

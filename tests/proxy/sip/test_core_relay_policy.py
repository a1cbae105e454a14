"""Issue 7: where a response may go without a transaction, and requests too large for UDP.

- Responses are relayed along transactions, or statelessly only toward the PBX, the trunks and
  trusted networks; a stray 100 is never forwarded (RFC 3261 16.7 step 5: hop by hop); anything
  else is dropped and counted (a Dropped event).
- A request over 1300 octets (RFC 3261 18.1.1) toward a UDP next hop goes over TCP when that side
  takes TCP (`large_over_tcp`); one no transport can carry gets 513 at once, never a 408 later.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from proxy.sip.addresses import Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.events import Answered, Dropped
from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    invite,
    make_core,
    sent_to,
    start_line,
    values,
)

OUR_VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp0123456789;rport"


def stray(status: int, upstream_via: str) -> bytes:
    """A response for a transaction this proxy does not have (restart, forged, late)."""
    return (
        f"SIP/2.0 {status} Whatever\r\n"
        f"Via: {OUR_VIA}\r\nVia: {upstream_via}\r\n"
        "From: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:2@127.0.0.1>;tag=b\r\n"
        "Call-ID: stray@pbx\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def dropped(core: ProxyCore) -> list[Dropped]:
    return [e for e in core.events_to_handle() if isinstance(e, Dropped)]


def test_a_stray_100_is_never_forwarded() -> None:
    core = make_core()
    core.receive(stray(100, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-x"), TRUNK_SOURCE, 0.0)
    assert core.datagrams_to_send() == []
    assert core.counters["dropped"] == 1
    assert [d.reason for d in dropped(core)] == ["stray 100"]


def test_a_stray_response_toward_an_unknown_host_is_dropped_and_counted() -> None:
    core = make_core()
    core.receive(stray(180, "SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bK-x"), TRUNK_SOURCE, 0.0)
    assert core.datagrams_to_send() == []
    assert core.counters["dropped"] == 1
    (event,) = dropped(core)
    assert event.reason == "stray response" and event.source == TRUNK_SOURCE
    assert "127.0.0.9" in event.detail


def test_received_cannot_send_a_stray_elsewhere() -> None:
    """received= names the host a response goes to: it is checked too."""
    core = make_core()
    via = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-x;received=192.0.2.7"
    core.receive(stray(200, via), TRUNK_SOURCE, 0.0)
    assert core.datagrams_to_send() == []
    assert [d.reason for d in dropped(core)] == ["stray response"]


def test_a_stray_2xx_toward_the_pbx_or_a_trusted_network_is_relayed() -> None:
    core = make_core()
    trusted = dataclasses.replace(core.config, trusted=(ipaddress.ip_network("10.1.0.0/16"),))
    core = ProxyCore(trusted, FixedPolicy())
    core.receive(stray(200, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-x"), TRUNK_SOURCE, 0.0)
    core.receive(stray(200, "SIP/2.0/UDP 10.1.2.3:5070;branch=z9hG4bK-y"), TRUNK_SOURCE, 0.0)
    assert [o.target for o in core.datagrams_to_send()] == [PBX, Target("udp", "10.1.2.3", 5070)]
    assert core.counters["responses_relayed_stateless"] == 2


# ----------------------------------------------------------------- size
def big_invite(size: int) -> bytes:
    """An INVITE whose SDP makes it about `size` octets."""
    filler = "a=x-filler:" + "x" * 60 + "\r\n"
    base = len(invite())
    lines = max(0, (size - base) // len(filler))
    return invite(extra="").replace(b"s=-\r\n", b"s=-\r\n" + filler.encode() * lines).replace(
        b"Content-Length: 36", f"Content-Length: {36 + lines * len(filler)}".encode()
    )


def with_config(*, large_over_tcp: frozenset[str]) -> Clocked:
    core = make_core()
    config = dataclasses.replace(core.config, large_over_tcp=large_over_tcp)
    return Clocked(ProxyCore(config, FixedPolicy()))


def test_big_invite_check_the_builder() -> None:
    data = big_invite(1400)
    assert 1300 < len(data) <= 1400
    assert int(values(data, "Content-Length")[0]) == len(data.split(b"\r\n\r\n", 1)[1])


def test_over_1300_octets_goes_over_tcp_when_the_side_takes_it() -> None:
    clocked = with_config(large_over_tcp=frozenset({"trunk"}))
    out = clocked.receive(big_invite(1400), PBX_SOURCE)
    (forwarded,) = [o for o in out if o.data.startswith(b"INVITE")]
    assert forwarded.target == Target("tcp", TRUNK.host, TRUNK.port)
    assert values(forwarded.data, "Via")[0].startswith("SIP/2.0/TCP 127.0.0.1:5060;branch=")
    assert ";transport=tcp" in values(forwarded.data, "Record-Route")[0]


def test_a_small_invite_stays_on_udp_even_when_the_side_takes_tcp() -> None:
    clocked = with_config(large_over_tcp=frozenset({"trunk"}))
    (forwarded,) = [o for o in clocked.receive(invite(), PBX_SOURCE) if o.target.port == TRUNK.port]
    assert forwarded.target == TRUNK
    assert values(forwarded.data, "Via")[0].startswith("SIP/2.0/UDP")


def test_over_1300_octets_stays_on_udp_when_the_side_does_not_take_tcp() -> None:
    clocked = Clocked(make_core())
    (forwarded,) = sent_to(clocked.receive(big_invite(1400), PBX_SOURCE), TRUNK)
    assert values(forwarded, "Via")[0].startswith("SIP/2.0/UDP")


def test_a_request_no_transport_can_carry_gets_513_at_once_not_408_later() -> None:
    pbx_tcp = Source("tcp", PBX.host, PBX.port, connection=3)
    clocked = Clocked(make_core())
    out = clocked.receive(big_invite(65_600), pbx_tcp)
    assert sent_to(out, TRUNK) == []
    assert [start_line(o.data) for o in out] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 513 Message Too Large",
    ]
    assert all(o.connection == 3 for o in out)
    (answered,) = [e for e in clocked.core.events_to_handle() if isinstance(e, Answered)]
    assert (answered.status, answered.destination) == (513, TRUNK)
    assert clocked.core.counters["too_large"] == 1
    later = clocked.advance(64.0)
    assert [start_line(o.data) for _, o in later if o.target.host == PBX.host] == []

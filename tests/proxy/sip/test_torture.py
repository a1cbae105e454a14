"""All 49 RFC 4475 torture messages through the sans-IO core, from the PBX and from the trunk,
as datagrams and fed one byte at a time through the stream framer (TCP). Table-driven from the
README of `../shared/sip-torture/` (see torture_support.EXPECTED for the one choice per row)."""

from __future__ import annotations

import pytest

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.framing import StreamFramer
from proxy.sip.timers import T1
from tests.proxy.sip.support import (
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_SOURCE,
    invite,
    make_core,
    response_to,
    sent_to,
)
from tests.proxy.sip.torture_support import (
    DATA_DIR,
    EXPECTED,
    NAMES,
    REQUESTS,
    SHARED_DIR,
    STREAM_EXPECTED,
    Kind,
    Outcome,
    TableRow,
    check_forwarded,
    check_reply,
    load,
    readme_table,
    request_for,
    rewritten,
    start_line,
    status_of,
    via_lines,
    with_vias,
    without_top_via,
)

SIDES = {"pbx": (PBX_SOURCE, TRUNK), "trunk": (TRUNK_SOURCE, PBX)}
TCP_SOURCES = {
    "pbx": Source("tcp", "127.0.0.1", 40001, connection=7),
    "trunk": Source("tcp", "127.0.0.1", 5080, connection=8),
}


# ----------------------------------------------------------------------------- the table itself
def test_table_covers_exactly_the_49_files_of_the_readme() -> None:
    files = sorted(path.stem for path in DATA_DIR.glob("*.dat"))
    in_readme = sorted(name for row in readme_table() for name in row.names)
    assert len(files) == 49
    assert in_readme == files
    assert list(NAMES) == files


@pytest.mark.parametrize("row", readme_table(), ids=lambda row: ",".join(row.names))
def test_each_expected_outcome_is_one_the_readme_allows(row: TableRow) -> None:
    for name in row.names:
        outcome = EXPECTED[name]
        must = row.must.lower()
        if outcome.kind is Kind.REPLY:
            assert f"reply {outcome.status}" in must or f"{outcome.status}" in must, (name, must)
        elif outcome.kind in (Kind.DROP, Kind.BAD_RESPONSE):
            assert "drop" in must, (name, must)
        else:
            assert any(word in must for word in ("forward", "relay", "handle with")), (name, must)


@pytest.mark.skipif(not SHARED_DIR.is_dir(), reason="no shared torture directory on this machine")
@pytest.mark.parametrize("name", NAMES)
def test_copy_is_byte_identical_to_the_shared_corpus(name: str) -> None:
    assert load(name) == (SHARED_DIR / f"{name}.dat").read_bytes()


# ----------------------------------------------------------------------------- helpers
def receive(core: ProxyCore, data: bytes, source: Source, now: float = 0.0) -> list[Outgoing]:
    core.receive(data, source, now)
    return core.datagrams_to_send()


def feed_bytewise(
    core: ProxyCore, data: bytes, source: Source, framer: StreamFramer | None = None
) -> tuple[list[Outgoing], StreamFramer]:
    """What the TCP adapter does, with the worst possible segmentation: one octet per read."""
    framer = framer or StreamFramer()
    out: list[Outgoing] = []
    for index in range(len(data)):
        for frame in framer.feed(data[index : index + 1]):
            if frame.fatal:
                core.receive_broken_stream(frame.data, frame.reason, source)
            else:
                core.receive(frame.data, source, 0.0)
            out += core.datagrams_to_send()
    return out, framer


def assert_still_works(core: ProxyCore, now: float = 1.0) -> None:
    """After whatever came before, an ordinary outbound INVITE is handled normally."""
    request = invite(call_id="after-torture@pbx", branch="z9hG4bK-after-torture")
    out = receive(core, request, PBX_SOURCE, now)
    assert [status_of(data) for data in sent_to(out, PBX)] == [100]
    forwarded = sent_to(out, TRUNK)
    assert len(forwarded) == 1
    check_forwarded(request, forwarded[0], rewritten_identity=True)
    assert core.counters["internal_errors"] == 0


def assert_outcome(
    name: str, outcome: Outcome, out: list[Outgoing], source: Source, next_hop: Target
) -> None:
    data = load(name)
    back = [o for o in out if (o.target.host, o.target.port) == (source.host, source.port)]
    onward = sent_to(out, next_hop)
    from_pbx = source.port != 5080
    if outcome.kind is Kind.FORWARD:
        provisional = [o.data for o in back if o.data.startswith(b"SIP/2.0 100 ")]
        assert [o.data for o in back] == provisional  # at most our 100 Trying, for an INVITE
        assert len(onward) == 1, [start_line(o) for o in onward]
        check_forwarded(data, onward[0], rewritten_identity=rewritten(data, from_pbx=from_pbx))
    elif outcome.kind is Kind.FORWARD_BOTH:
        first, second = data.split(b"\r\n\r\n\r\n", 1)
        assert len(onward) == 2, [start_line(o) for o in onward]
        check_forwarded(first + b"\r\n\r\n", onward[0], rewritten_identity=False)
        check_forwarded(second, onward[1], rewritten_identity=from_pbx)
        # then the unframeable rest: nothing to answer, the connection is closed
        closing = [o for o in back if not o.data.startswith(b"SIP/2.0 100 ")]
        assert closing == [Outgoing(b"", source.reply_target(), source.connection, True)]
    elif outcome.kind in (Kind.REPLY, Kind.CLOSE):
        assert onward == []
        assert len(out) == 1 and out[0] is back[0], [start_line(o.data) for o in out]
        check_reply(data, out[0].data, outcome.status)
        assert out[0].connection == source.connection
        assert out[0].close_after is (outcome.kind is Kind.CLOSE)
    else:
        assert outcome.kind in (Kind.DROP, Kind.WAIT)
        assert out == []


# ----------------------------------------------------------------------------- requests
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", REQUESTS)
def test_request_as_datagram(name: str, side: str) -> None:
    source, next_hop = SIDES[side]
    core = make_core()
    out = receive(core, load(name), source)
    assert_outcome(name, EXPECTED[name], out, source, next_hop)
    assert_still_works(core)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", REQUESTS)
def test_request_fed_bytewise_on_a_stream(name: str, side: str) -> None:
    source, next_hop = TCP_SOURCES[side], SIDES[side][1]
    core = make_core()
    out, framer = feed_bytewise(core, load(name), source)
    outcome = STREAM_EXPECTED[name]
    assert_outcome(name, outcome, out, source, next_hop)
    if outcome.kind is Kind.WAIT:
        assert framer.pending == len(load(name)) and not framer.broken
    elif outcome.kind is Kind.CLOSE:
        assert framer.broken
    else:
        assert framer.pending == 0
    assert_still_works(core)


def test_dblreq_trailing_octets_never_leave() -> None:
    data = load("dblreq")
    core = make_core()
    out = receive(core, data, PBX_SOURCE)
    assert [start_line(o.data) for o in out] == [b"REGISTER sip:example.com SIP/2.0"]
    assert all(b"sip:joe@example.com" not in o.data for o in out)
    assert all(b"v=0" not in o.data for o in out)


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        ("esc01", b"INVITE sip:sips:user@example.com@example.net"),  # never unescaped
        ("escnull", b"null-\x00-null"),
        ("esc02", b"REGISTER sip:"),
        ("escruri", b"\r\nRoute: <sip:example.com>"),
    ],
)
def test_escapes_are_never_decoded(name: str, forbidden: bytes) -> None:
    core = make_core()
    out = receive(core, load(name), PBX_SOURCE)
    assert out
    assert all(forbidden not in o.data for o in out)


def test_bext01_names_the_unsupported_proxy_require_options() -> None:
    out = receive(make_core(), load("bext01"), PBX_SOURCE)
    assert len(out) == 1
    assert b"\r\nUnsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n" in out[0].data


def test_unknown_method_keeps_its_unusual_request_uri() -> None:
    out = receive(make_core(), load("intmeth"), PBX_SOURCE)
    (forwarded,) = sent_to(out, TRUNK)
    assert start_line(forwarded) == start_line(load("intmeth"))


# ----------------------------------------------------------------------------- responses
DIRECTIONS = {"pbx-asks": (PBX_SOURCE, TRUNK_SOURCE), "trunk-asks": (TRUNK_SOURCE, PBX_SOURCE)}


def forward_request_for(
    core: ProxyCore, name: str, asker: Source
) -> tuple[bytes, bytes, list[Outgoing]]:
    """Send through the core the request the torture response answers; return it, what the core
    forwarded, and what it sent back to the asker (100 Trying)."""
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{asker.port};branch=z9hG4bK-{name}-req;rport\r\n".encode()
    request = request_for(load(name), via, contact_port=asker.port)
    out = receive(core, request, asker)
    answerer = TRUNK if asker.port != 5080 else PBX
    (forwarded,) = sent_to(out, answerer)
    return request, forwarded, [o for o in out if o.target.port == asker.port]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", ["unreason", "noreason", "scalarlg", "bigcode"])
def test_response_answering_a_forwarded_request(name: str, direction: str) -> None:
    asker, answerer = DIRECTIONS[direction]
    core = make_core()
    _, forwarded, _ = forward_request_for(core, name, asker)
    response = with_vias(load(name), via_lines(forwarded))
    assert response.replace(b"".join(via_lines(forwarded)), b"") == load(name).replace(
        b"".join(via_lines(load(name))), b""
    )
    out = receive(core, response, answerer, now=0.1)
    kind = EXPECTED[name].kind
    if kind is Kind.RELAY:
        assert [o.target.port for o in out] == [asker.port]
        assert out[0].data == without_top_via(response)  # byte-identical but for our Via
    else:
        assert out == [], [start_line(o.data) for o in out]
    # RFC 3261 17.1.1.2: a provisional stops Timer A retransmission; otherwise it goes on.
    core.handle_timer(T1 + 0.01)
    retransmitted = [o.data for o in core.datagrams_to_send() if o.target.port == answerer.port]
    assert retransmitted == ([] if kind in (Kind.RELAY, Kind.HOP_BY_HOP) else [forwarded])
    if kind is Kind.BAD_RESPONSE:
        # the transaction survived the broken answer: a sane final answer still goes through
        sane = response_to(forwarded, 486, "Busy Here")
        out = receive(core, sane, answerer, 1.0)
        relayed = [o.data for o in out if o.target.port == asker.port]
        assert [status_of(data) for data in relayed] == [486]
    assert_still_works(core, now=2.0)


def test_a_response_with_an_empty_reason_phrase_relays_byte_identical() -> None:
    """noreason's 100 is hop by hop (RFC 3261 16.7 step 5); the same empty reason on a 180."""
    core = make_core()
    _, forwarded, _ = forward_request_for(core, "noreason", PBX_SOURCE)
    ringing = with_vias(load("noreason"), via_lines(forwarded)).replace(
        b"SIP/2.0 100 \r\n", b"SIP/2.0 180 \r\n", 1
    )
    out = receive(core, ringing, TRUNK_SOURCE, 0.1)
    assert [o.data for o in out] == [without_top_via(ringing)]
    assert out[0].target.port == PBX_SOURCE.port


@pytest.mark.parametrize("name", ["unreason", "noreason", "scalarlg", "bigcode", "bcast"])
@pytest.mark.parametrize("side", SIDES)
def test_raw_response_whose_top_via_is_not_ours_is_dropped(name: str, side: str) -> None:
    core = make_core()
    assert receive(core, load(name), SIDES[side][0]) == []
    assert_still_works(core)


def test_bcast_with_our_via_on_top_is_not_sent_to_the_broadcast_address() -> None:
    """No transaction (e.g. after a restart): the stateless relay would follow the 2nd Via."""
    ours = b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp00112233445566778899;rport\r\n"
    data = load("bcast")
    second = via_lines(data)[1]
    assert b"255.255.255.255" in second
    response = with_vias(data, [ours, second])
    core = make_core()
    assert receive(core, response, TRUNK_SOURCE) == []
    assert core.counters["dropped"] == 1
    assert_still_works(core)


def test_every_file_is_survived_in_one_core_in_a_row() -> None:
    """One long-lived core, all 49 as datagrams and as a byte stream, then still working."""
    core = make_core()
    for name in NAMES:
        receive(core, load(name), PBX_SOURCE)
        receive(core, load(name), TRUNK_SOURCE)
        feed_bytewise(core, load(name), TCP_SOURCES["pbx"])
    assert core.counters["internal_errors"] == 0
    assert_still_works(core, now=3.0)


@pytest.mark.parametrize(("first", "second"), [("cparam01", "cparam02"), ("escnull", "regescrt")])
def test_files_sharing_a_transaction_key_are_one_transaction(first: str, second: str) -> None:
    """Same branch, sent-by and method (RFC 3261 17.2.3): in one core the second file is a
    retransmission of the first: absorbed, the last response sent again, nothing forwarded."""
    core = make_core()
    (forwarded,) = sent_to(receive(core, load(first), PBX_SOURCE), TRUNK)
    relayed = sent_to(receive(core, response_to(forwarded, 200, "OK"), TRUNK_SOURCE, 0.1), PBX)
    assert [status_of(data) for data in relayed] == [200]
    again = receive(core, load(second), PBX_SOURCE, 0.2)
    assert again == [Outgoing(relayed[0], PBX_SOURCE.reply_target())]
    assert core.counters["retransmissions_absorbed"] == 1

"""The `--workers` dispatcher's pure parts: the Call-ID scan, the worker choice, the header."""

from __future__ import annotations

import contextlib
import socket
import time
import zlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proxy.dispatch_loop import Dispatcher
from proxy.dispatcher import (
    SCAN_LIMIT,
    Packet,
    StreamHop,
    call_id_of,
    decode_packet,
    encode_header,
    worker_for,
)

INVITE = (
    b"INVITE sip:00442079460000@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"From: <sip:1002@127.0.0.1>;tag=a\r\n"
    b"To: <sip:00442079460000@127.0.0.1>\r\n"
    b"{call_id}\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def message(call_id_line: bytes, method: bytes = b"INVITE") -> bytes:
    """The INVITE with this Call-ID line, or the same request as another method: the method
    changed before the Call-ID goes in, so a Call-ID that spells a method stays as it is."""
    return INVITE.replace(b"INVITE", method).replace(b"{call_id}", call_id_line)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"Call-ID: abc@host", b"abc@host"),
        (b"call-id: abc@host", b"abc@host"),
        (b"CALL-ID:abc@host", b"abc@host"),
        (b"i: abc@host", b"abc@host"),  # compact form, RFC 3261 20.8
        (b"I:abc@host", b"abc@host"),
        (b"Call-ID \t: abc@host  ", b"abc@host"),  # whitespace around the colon, RFC 3261 7.3.1
        (b"Call-ID: Mixed-Case@Host", b"Mixed-Case@Host"),  # compared case-sensitively
        (b"Call-ID:", None),
        (b"Call-Info: <http://x>", None),  # another header that starts alike
        (b"X-Call-ID: abc", None),
        (b"Via-i: abc", None),
    ],
)
def test_call_id_of(line: bytes, expected: bytes | None) -> None:
    assert call_id_of(message(line)) == expected


def test_scan_is_bounded() -> None:
    padding = b"X-Padding: " + b"a" * SCAN_LIMIT + b"\r\n"
    late = message(padding + b"Call-ID: late@host")
    assert call_id_of(late) is None
    assert call_id_of(late, limit=len(late)) == b"late@host"


def test_not_a_sip_message() -> None:
    assert call_id_of(b"") is None
    assert call_id_of(b"\x00\xff" * 100) is None


call_ids = st.binary(min_size=1, max_size=60).filter(
    lambda b: b.strip() == b and b"\r" not in b and b"\n" not in b and b"\x00" not in b
    and not b.startswith((b" ", b"\t"))
)
header_names = st.sampled_from([b"Call-ID", b"call-id", b"CALL-ID", b"i", b"I", b"Call-Id"])
spacing = st.sampled_from([b"", b" ", b"\t", b"  "])


@example(b"INVITE", b"Call-ID", b"", b"", b"Call-ID", b"", 2, 5070)  # the test once renamed it
@given(call_ids, header_names, spacing, spacing, header_names, spacing,
       st.integers(2, 16), st.integers(1, 65535))
def test_every_message_of_a_call_reaches_the_same_worker(
    call_id: bytes, name: bytes, before: bytes, after: bytes, other_name: bytes,
    other_after: bytes, workers: int, port: int,
) -> None:
    """The INVITE, its retransmission, the CANCEL and ACK a UA writes with another form of
    the header, from another port even: one worker, the one the Call-ID's hash names."""
    invite = message(name + before + b":" + after + call_id)
    cancel = message(other_name + b":" + other_after + call_id, b"CANCEL")
    chosen = {worker_for(m, "127.0.0.1", p, workers) for m, p in ((invite, 5070),
                                                                   (invite, 5070),
                                                                   (cancel, port))}
    assert chosen == {zlib.crc32(call_id) % workers}


@given(st.binary(max_size=300), st.integers(1, 16), st.integers(0, 65535))
def test_worker_index_in_range_for_any_bytes(data: bytes, workers: int, port: int) -> None:
    assert 0 <= worker_for(data, "10.0.0.1", port, workers) < workers


def test_without_call_id_the_source_decides() -> None:
    garbage = b"hello"
    first = {worker_for(garbage, "10.0.0.1", 5060, 8) for _ in range(3)}
    assert len(first) == 1
    spread = {worker_for(garbage, "10.0.0.1", port, 8) for port in range(5000, 5100)}
    assert len(spread) > 1


def test_calls_spread_over_workers() -> None:
    counts = [0, 0]
    for n in range(1000):
        counts[worker_for(message(b"Call-ID: %d-abc@10.0.0.1" % n), "10.0.0.1", 5060, 2)] += 1
    assert min(counts) > 400


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["::ffff:127.0.0.1", "fe80::1%eth0", "::1"]),
)


@given(addresses, st.integers(0, 65535), st.integers(0, 255), st.binary(max_size=2000),
       st.booleans())
def test_header_round_trip(
    host: str, port: int, index: int, datagram: bytes, shed: bool
) -> None:
    """The worker gets the source exactly as the supervisor's socket reported it, and whether
    the dispatcher asks for the INVITE to be shed."""
    assert decode_packet(encode_header(host, port, index, shed=shed) + datagram) == Packet(
        host, port, index, datagram, shed)


@pytest.mark.parametrize(("host", "port", "index"), [
    ("example.com", 5060, 0), ("127.0.0.1", 70000, 0), ("127.0.0.1", -1, 0), ("", 5060, 0),
    ("127.0.0.1", 5060, 256),
])
def test_encode_refuses_what_is_not_an_address(host: str, port: int, index: int) -> None:
    with pytest.raises(ValueError):
        encode_header(host, port, index)


@given(st.binary(max_size=100))
def test_decode_never_raises(data: bytes) -> None:
    packet = decode_packet(data)
    if packet is not None:
        assert 0 <= packet.port <= 65535 and packet.host


stream_hops = st.builds(
    StreamHop, st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**64 - 1),
    st.sampled_from(["tcp", "tls"]), st.booleans(), st.booleans(),
).filter(lambda hop: hop.reply or not hop.close_after)


@given(addresses, st.integers(0, 65535), stream_hops, st.binary(max_size=2000))
def test_stream_packet_round_trip(host: str, port: int, hop: StreamHop, datagram: bytes) -> None:
    """A TCP/TLS message relayed to the worker its Call-ID names, or the answer going back to
    the worker holding the connection: every field arrives as sent."""
    packet = decode_packet(encode_header(host, port, stream=hop) + datagram)
    assert packet == Packet(host, port, 0, datagram, False, hop)


@pytest.mark.parametrize("hop", [
    StreamHop(256, 0, 1), StreamHop(0, -1, 1), StreamHop(0, 0, -1), StreamHop(0, 0, 2**64),
    StreamHop(0, 0, 1, "udp"),
])
def test_encode_refuses_what_is_not_a_stream_hop(hop: StreamHop) -> None:
    with pytest.raises(ValueError):
        encode_header("127.0.0.1", 5060, stream=hop)


def test_decode_refuses_other_versions_unknown_flags_and_truncation() -> None:
    packet = encode_header("192.0.2.1", 5060) + b"x"
    assert decode_packet(packet) is not None
    assert decode_packet(b"\x02" + packet[1:]) is None  # the header before stream packets
    assert decode_packet(packet[:1] + b"\x20" + packet[2:]) is None  # an unknown flag
    assert decode_packet(packet[:7]) is None
    relayed = encode_header("192.0.2.1", 5060, stream=StreamHop(1, 0, 7)) + b"x"
    assert decode_packet(relayed) is not None
    assert decode_packet(relayed[:1] + b"\x06" + relayed[2:]) is None  # message and reply
    assert decode_packet(relayed[:1] + b"\x03" + relayed[2:]) is None  # a stream shed
    assert decode_packet(relayed[:1] + b"\x0a" + relayed[2:]) is None  # a message closing
    assert decode_packet(packet[:5] + b"\x01" + packet[6:]) is None  # a worker, no stream


def _receive(sockets: list[socket.socket], expected: int) -> list[list[bytes]]:
    received: list[list[bytes]] = [[] for _ in sockets]
    deadline = time.monotonic() + 5.0
    while sum(map(len, received)) < expected and time.monotonic() < deadline:
        for index, sock in enumerate(sockets):
            sock.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                received[index].append(sock.recv(70000))
    return received


def test_dispatcher_thread_forwards_by_call_id_and_sends_replies_from_the_shared_port() -> None:
    """The real thread on loopback sockets: each datagram reaches the inbox its Call-ID names,
    prefixed with the address it came from; a worker's reply leaves from the shared socket."""
    shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    shared.bind(("127.0.0.1", 0))
    shared_address = shared.getsockname()
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    dispatcher = Dispatcher([shared], [sender for sender, _ in pairs])
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    host, port = peer.getsockname()
    datagrams = [message(b"Call-ID: %d@pbx" % n) for n in range(20)]
    try:
        dispatcher.start()
        for datagram in datagrams:
            peer.sendto(datagram, shared_address)
        received = _receive([inbox for _, inbox in pairs], len(datagrams))
        pairs[1][1].send(encode_header(host, port, 0) + b"SIP/2.0 200 OK\r\n\r\n")
        peer.settimeout(5.0)
        reply, reply_from = peer.recvfrom(70000)
    finally:
        dispatcher.stop()
        for sock in (shared, peer, *(s for pair in pairs for s in pair)):
            sock.close()
    for index, packets in enumerate(received):
        for raw in packets:
            packet = decode_packet(raw)
            assert packet is not None
            assert (packet.host, packet.port, packet.socket) == (host, port, 0)
            assert worker_for(packet.datagram, packet.host, packet.port, 2) == index
    assert sorted(p for packets in received for p in packets) == sorted(
        encode_header(host, port) + d for d in datagrams)
    assert dispatcher.counters.dispatched == [len(p) for p in received]
    assert all(dispatcher.counters.dispatched)
    assert (reply, reply_from) == (b"SIP/2.0 200 OK\r\n\r\n", shared_address)
    assert dispatcher.counters.replies == 1
    assert dispatcher.counters.dropped == 0


# ------------------------------------------------------------------ shedding by the backlog's wait
def _full_inbox() -> tuple[socket.socket, socket.socket, int]:
    """A worker's socket pair whose worker reads nothing: filled until a send would block."""
    sender, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender.setblocking(False)
    filler = 0
    with contextlib.suppress(BlockingIOError):
        for _ in range(10_000):
            sender.send(b"filler")
            filler += 1
    return sender, inbox, filler


def _read_all(inbox: socket.socket, dispatcher: Dispatcher) -> list[bytes]:
    """What the worker reads, the dispatcher flushing its backlog as room frees."""
    inbox.setblocking(False)
    got: list[bytes] = []
    for _ in range(10_000):
        try:
            got.append(inbox.recv(70000))
        except BlockingIOError:
            dispatcher._flush(0)
            try:
                got.append(inbox.recv(70000))
            except BlockingIOError:
                return got
    return got


REINVITE = message(b"Call-ID: dialog@pbx").replace(
    b"To: <sip:00442079460000@127.0.0.1>", b"To: <sip:00442079460000@127.0.0.1>;tag=callee"
)


@pytest.mark.parametrize("shed_after", [0.0, 60.0], ids=["waited past the bound", "within it"])
def test_a_new_invite_for_a_worker_behind_goes_ahead_flagged_to_shed(shed_after: float) -> None:
    """The worker's socket is full, so what comes waits in the dispatcher's backlog; once the
    oldest has waited `shed_after`, a new INVITE goes ahead of it, flagged "shed". A BYE and
    a re-INVITE (To tag) keep their place, and nothing is flagged within the bound."""
    assert b";tag=callee" in REINVITE
    shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    shared.bind(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender, inbox, filler = _full_inbox()
    dispatcher = Dispatcher([shared], [sender], shed_after=shed_after)
    for fd in (shared.fileno(), sender.fileno()):
        dispatcher._poller.register(fd)  # what start() does; the thread is not started here
    shared.setblocking(False)
    try:
        bye = message(b"Call-ID: first@pbx", b"BYE")
        new_call = message(b"Call-ID: new@pbx")
        for datagram in (bye, REINVITE, new_call):
            peer.sendto(datagram, shared.getsockname())
        time.sleep(0.05)
        dispatcher._drain(shared)
        got = _read_all(inbox, dispatcher)
    finally:
        for sock in (shared, peer, sender, inbox):
            sock.close()
    assert got[:filler] == [b"filler"] * filler
    packets = [decode_packet(raw) for raw in got[filler:]]
    assert all(packet is not None for packet in packets)
    order = [(p.datagram, p.shed) for p in packets if p is not None]
    if shed_after == 0.0:
        assert order == [(new_call, True), (bye, False), (REINVITE, False)]
        assert dispatcher.counters.sent_ahead == 1
    else:
        assert order == [(bye, False), (REINVITE, False), (new_call, False)]
        assert dispatcher.counters.sent_ahead == 0
    assert dispatcher.counters.dropped == 0

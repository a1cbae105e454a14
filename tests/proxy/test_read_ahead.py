"""Reading ahead under overload (proxy/read_ahead.py, ProxyServer.on_message): the queue keeps
order, its bound and its ages; while the server reads ahead a new INVITE to be shed is answered
503 the moment it is read, ahead of what waits, and what waits is handled responses first, then
requests in arrival order; no
INVITE is admitted behind a wait longer than `--max-loop-lag`; past the guard (T1 less 0.1 s)
of waiting only a shed INVITE that may repeat an admitted one still waiting waits its turn (it
must find its transaction); the kernel's queue depth is read from the socket (SO_MEMINFO) and
starts reading ahead."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bench.bench_calls import PBX, TRUNK, answer, invite
from bench.bench_glue import CountingTransport, make_server
from proxy.read_ahead import RETRANSMIT_GUARD, ReadAheadQueue
from proxy.server import READ_AHEAD_BYTES, READ_AHEAD_HOLD, ProxyServer
from proxy.sip.addresses import Source
from proxy.transport import UdpEndpoint
from tests.proxy.recording_sink import Sink

OTHER = Source("udp", "127.0.0.1", 5071)


# ------------------------------------------------------------------ the queue
def test_the_queue_gives_back_what_it_took_in_order_with_its_decision() -> None:
    queue = ReadAheadQueue(max_bytes=1000)
    assert not queue and queue.oldest_wait(5.0) == 0.0
    assert queue.put(b"first", PBX, 1.0)
    assert queue.put(b"second", OTHER, 1.5, shed=True)
    assert len(queue) == 2 and queue.bytes_waiting == 11
    assert queue.oldest_wait(2.0) == pytest.approx(1.0)
    assert queue.take() == (b"first", PBX, False)
    assert queue.oldest_wait(2.0) == pytest.approx(0.5)
    assert queue.take() == (b"second", OTHER, True)
    assert not queue and queue.bytes_waiting == 0


def test_past_its_bound_in_bytes_the_queue_drops_and_counts() -> None:
    queue = ReadAheadQueue(max_bytes=10)
    assert queue.put(b"x" * 6, PBX, 0.0)
    assert not queue.put(b"y" * 5, PBX, 0.0)  # 11 > 10: dropped, as a full socket buffer would
    assert queue.put(b"z" * 4, PBX, 0.0)  # 10: fits
    assert (len(queue), queue.dropped, queue.bytes_waiting) == (2, 1, 10)


RINGING = b"SIP/2.0 180 Ringing\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\n\r\n"


def test_responses_are_taken_before_requests_and_in_order_among_themselves() -> None:
    """A response completes admitted work and stops the timers of what it answers: it does not
    wait behind requests read before it (RFC 3261 17.1.1.2: Timer A would retransmit)."""
    queue = ReadAheadQueue(max_bytes=1000)
    assert queue.put(b"ACK a", PBX, 1.0)
    assert queue.put(b"INVITE b", PBX, 1.1, shed=True)
    assert queue.put(RINGING, TRUNK, 1.2)
    assert queue.put(b"BYE c", PBX, 1.3)
    assert queue.put(OK, TRUNK, 1.4)
    assert len(queue) == 5 and queue.bytes_waiting == 18 + len(RINGING) + len(OK)
    assert queue.oldest_wait(2.0) == pytest.approx(1.0)  # the oldest of either lane
    assert [queue.take() for _ in range(5)] == [
        (RINGING, TRUNK, False),
        (OK, TRUNK, False),
        (b"ACK a", PBX, False),
        (b"INVITE b", PBX, True),
        (b"BYE c", PBX, False),
    ]
    assert not queue and queue.bytes_waiting == 0 and queue.oldest_wait(2.0) == 0.0


def test_a_response_alone_is_the_oldest_wait_and_counts_against_the_bound() -> None:
    queue = ReadAheadQueue(max_bytes=len(OK) + 4)
    assert queue.put(OK, TRUNK, 3.0)
    assert queue.oldest_wait(3.25) == pytest.approx(0.25)
    assert not queue.put(RINGING, TRUNK, 3.1)  # past the bound: dropped, as any datagram
    assert queue.put(b"ACK", PBX, 3.2)
    assert (len(queue), queue.dropped) == (2, 1)
    assert queue.oldest_wait(3.25) == pytest.approx(0.25)
    assert queue.take() == (OK, TRUNK, False)
    assert queue.oldest_wait(3.25) == pytest.approx(0.05)


# ------------------------------------------------------------------ in the server
def invites_forwarded(transport: CountingTransport) -> list[bytes]:
    return [data for data in transport.sent if data.startswith(b"INVITE ")]


def answers(transport: CountingTransport, status: bytes) -> int:
    return sum(1 for data in transport.sent if data.startswith(b"SIP/2.0 " + status))


async def settle(rounds: int = 50) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def reading_ahead(directory: Path) -> tuple[ProxyServer, CountingTransport]:
    server, transport = make_server(directory)
    server._read_ahead = True  # what the overload check sets while shedding
    return server, transport


async def _shed_ahead_of_the_queue(directory: Path) -> tuple[int, int, int, list[bytes]]:
    server, transport = reading_ahead(directory)
    for n in range(8):  # admitted (nothing is shed yet): they wait their turn
        server.on_message(invite(n), PBX)
    waiting_forwarded = len(invites_forwarded(transport))
    server._all_shed = True  # the detector now sheds every new INVITE
    server.on_message(invite(100), PBX)
    shed_at_once = answers(transport, b"503")
    await settle()
    if server._timer is not None:
        server._timer.cancel()
    return waiting_forwarded, shed_at_once, answers(transport, b"503"), invites_forwarded(
        transport
    )


def test_a_shed_invite_is_answered_at_once_ahead_of_what_waits(tmp_path: Path) -> None:
    waiting_forwarded, shed_at_once, shed, forwarded = asyncio.run(
        _shed_ahead_of_the_queue(tmp_path)
    )
    assert waiting_forwarded == 0  # nothing handled while it was being read
    assert shed_at_once == 1  # the 503 left before any of the 8 waiting was handled
    assert shed == 1
    branches = [line for data in forwarded for line in data.split(b"\r\n") if b"branch=z9hG4bKPj"
                in line]  # fmt: skip
    assert [b"z9hG4bKPj%08x" % n in line for n, line in enumerate(branches)] == [True] * 8


async def _admission_behind_a_long_wait(directory: Path) -> tuple[int, int]:
    server, transport = reading_ahead(directory)
    loop = asyncio.get_running_loop()
    # a response that has waited as long as a message may (`--max-loop-lag`, 0.1 s)
    server._waiting.put(b"SIP/2.0 180 Ringing\r\n\r\n", TRUNK, loop.time() - 0.1)
    server._draining = True  # its batch is not due yet
    server.on_message(invite(1), PBX)
    shed = answers(transport, b"503")
    server._draining = False
    server._work_off_waiting()
    if server._timer is not None:
        server._timer.cancel()
    return shed, len(invites_forwarded(transport))


def test_no_new_invite_is_admitted_behind_a_wait_over_the_bound(tmp_path: Path) -> None:
    """Even before the detector has decided anything (share 0): drop by sojourn time."""
    assert asyncio.run(_admission_behind_a_long_wait(tmp_path)) == (1, 0)


async def _shed_behind_the_guard(directory: Path) -> tuple[int, int, int, int]:
    server, transport = reading_ahead(directory)
    loop = asyncio.get_running_loop()
    server._draining = True  # hold the batches: the queue is what the test says it is
    server.on_message(invite(7), PBX)  # admitted: waits
    server._waiting._arrivals[0] = loop.time() - RETRANSMIT_GUARD  # ... and has waited the guard
    server._all_shed = True
    server.on_message(invite(7), PBX)  # its retransmission: the INVITE it repeats still waits
    server.on_message(invite(8), PBX)  # a new one, the copy of nothing waiting: shed at once
    answered_at_once = answers(transport, b"503")
    server._draining = False
    server._work_off_waiting()
    server._work_off_waiting()
    if server._timer is not None:
        server._timer.cancel()
    return (answered_at_once, len(invites_forwarded(transport)), answers(transport, b"503"),
            server.core.counters["retransmissions_absorbed"])  # fmt: skip


def test_after_a_long_wait_only_the_copy_of_a_waiting_invite_waits_its_turn(
    tmp_path: Path,
) -> None:
    """RFC 3261 17.1.1.2: the PBX retransmits after T1; the retransmission of an INVITE still
    waiting reaches the transaction its original opened (absorbed), it is not refused. A new
    INVITE that repeats nothing waiting is still answered 503 at once."""
    answered_at_once, forwarded, shed, absorbed = asyncio.run(_shed_behind_the_guard(tmp_path))
    assert answered_at_once == 1  # the new INVITE
    assert forwarded == 1  # the original, admitted when it came
    assert absorbed == 1  # its retransmission, in its turn
    assert shed == 1


def test_the_queue_knows_the_admitted_invites_it_holds() -> None:
    queue = ReadAheadQueue()
    folded = invite(2).replace(b"Max-Forwards: 70\r\n", b"Subject: a\r\n b\r\n")
    assert not queue.may_hold_original_of(invite(1))
    assert queue.put(invite(1), PBX, 0.0)  # admitted
    assert queue.put(invite(9), PBX, 0.0, shed=True)  # shed in its turn: no original
    assert queue.may_hold_original_of(invite(1))
    assert not queue.may_hold_original_of(invite(9)) and not queue.may_hold_original_of(folded)
    assert queue.put(folded, PBX, 0.0)  # admitted, unreadable at a glance
    assert queue.may_hold_original_of(folded)
    assert queue.may_hold_original_of(folded.replace(b"z9hG4bKPj", b"z9hG4bKXy"))  # can't tell
    assert not queue.may_hold_original_of(invite(3))  # readable: not the copy of `folded`
    queue.take()
    assert not queue.may_hold_original_of(invite(1))  # taken: its transaction answers now
    queue.take()
    queue.take()
    assert not queue.may_hold_original_of(folded) and not queue


async def _a_trunk_answer_behind_queued_invites(directory: Path) -> list[bytes]:
    server, transport = make_server(directory)
    server.on_message(invite(0), PBX)  # handled as it comes: forwarded to the trunk
    forwarded = invites_forwarded(transport)[0]
    server._read_ahead = True
    server._draining = True  # hold the batches: the queue is what the test says it is
    for n in range(1, 6):  # admitted, waiting their turn
        server.on_message(invite(n), PBX)
    server.on_message(answer(forwarded, 180, "Ringing"), TRUNK)  # read after them
    before = len(transport.sent)
    server._draining = False
    server._work_off_waiting()
    if server._timer is not None:
        server._timer.cancel()
    return transport.sent[before:]


def test_a_trunk_answer_is_relayed_before_the_invites_read_ahead_of_it(tmp_path: Path) -> None:
    """The 180 read after five admitted INVITEs reaches the PBX first; the INVITEs follow in
    their order."""
    sent = asyncio.run(_a_trunk_answer_behind_queued_invites(tmp_path))
    starts = [data.split(b" ", 2)[:2] for data in sent]
    assert starts[0] == [b"SIP/2.0", b"180"]
    later = [data for data in sent[1:] if data.startswith(b"INVITE ")]  # (and their 100s)
    assert len(later) == 5
    branches = [line for data in later for line in data.split(b"\r\n") if b"z9hG4bKPj" in line]
    assert [b"z9hG4bKPj%08x" % n in line for n, line in enumerate(branches, 1)] == [True] * 5


async def _untrusted_while_reading_ahead(directory: Path) -> tuple[int, int]:
    server, transport = reading_ahead(directory)
    server.on_message(invite(3), Source("udp", "127.0.0.9", 5060))  # neither PBX nor trunk
    refused_at_once = sum(1 for data in transport.sent if data.startswith(b"SIP/2.0 403"))
    return refused_at_once, len(server._waiting)


def test_an_untrusted_source_is_refused_at_once_never_queued(tmp_path: Path) -> None:
    assert asyncio.run(_untrusted_while_reading_ahead(tmp_path)) == (1, 0)


# ------------------------------------------------------------------ the kernel's queue
def test_the_kernel_queue_depth_is_read_from_the_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        endpoint = UdpEndpoint(Sink(), sock)
        assert endpoint.kernel_queue_bytes() == 0
        for _ in range(20):  # none read: all 20 wait in the kernel
            sender.sendto(b"x" * 900, sock.getsockname())
        assert endpoint.kernel_queue_bytes() >= 20 * 900  # the payload and its buffers
    finally:
        sender.close()
        sock.close()


class DeepQueue(UdpEndpoint):
    depth = 0

    def kernel_queue_bytes(self) -> int:
        return self.depth


async def _read_ahead_follows_the_kernel_queue(directory: Path) -> list[bool]:
    server, _ = make_server(directory)
    endpoint = DeepQueue(server)
    server._udp = [("127.0.0.1", endpoint)]
    seen = []
    for now, depth in ((0.0, 0), (0.05, READ_AHEAD_BYTES), (0.5, 0),
                       (0.05 + READ_AHEAD_HOLD + 0.01, 0)):  # fmt: skip
        endpoint.depth = depth
        server._decide_read_ahead(now, server._kernel_queues())
        seen.append(server._read_ahead)
    return seen


def test_reading_ahead_starts_when_the_kernel_queue_builds_and_lasts_its_hold(
    tmp_path: Path,
) -> None:
    assert asyncio.run(_read_ahead_follows_the_kernel_queue(tmp_path)) == [
        False, True, True, False
    ]

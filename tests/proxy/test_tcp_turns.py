"""A burst on one TCP connection is handled FRAMES_PER_TURN messages per loop turn, reading paused
meanwhile, in order: other connections, datagrams and timers get the loop in between (a real
loopback connection into a TcpConnection with a recording sink); and its backlog counts for the
overload check."""

from __future__ import annotations

import asyncio
import itertools
import socket

from proxy.transport import FRAMES_PER_TURN, TcpConnection
from tests.proxy.recording_sink import Sink

MESSAGE = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: %d\r\nContent-Length: 0\r\n\r\n"
BURST = 5 * FRAMES_PER_TURN + 3


async def _burst() -> tuple[Sink, list[int], list[bool], int]:
    loop = asyncio.get_running_loop()
    sink = Sink()
    connections: list[TcpConnection] = []

    def factory() -> TcpConnection:
        connection = TcpConnection(sink, 1)
        connections.append(connection)
        return connection

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if connections and connections[0].transport is not None:
                break
        connection = connections[0]
        data = b"".join(MESSAGE % index for index in range(BURST))
        connection.data_received(data)  # one read holding the whole burst
        first_turn = len(sink.messages)
        waiting, backlog = [connection.waiting], connection.queued_bytes()
        seen: list[int] = []
        for _ in range(BURST):  # another callback's view of the loop, one per turn
            await asyncio.sleep(0)
            seen.append(len(sink.messages))
            waiting.append(connection.waiting)
            if len(sink.messages) == BURST:
                break
        return sink, [first_turn, *seen], waiting, backlog
    finally:
        peer.close()
        server.close()
        await server.wait_closed()


def test_a_burst_is_handled_a_turn_at_a_time_in_order() -> None:
    sink, seen, waiting, backlog = asyncio.run(_burst())
    assert seen[0] == FRAMES_PER_TURN  # the rest waits for the next turns
    assert all(b - a <= FRAMES_PER_TURN for a, b in itertools.pairwise(seen))
    assert len(seen) > BURST // FRAMES_PER_TURN  # other callbacks ran in between
    assert sink.messages == [MESSAGE % index for index in range(BURST)]
    assert waiting[0] and not waiting[-1]
    assert backlog >= (BURST - FRAMES_PER_TURN) * len(MESSAGE % 0) // 2  # counted as waiting

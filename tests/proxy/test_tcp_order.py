"""Messages toward a TCP peer leave in the order the core produced them, also while the
connection to it is being made: `connection_made` registers the new connection (found by peer)
a loop step before `_connect` resumes to send what waited for it, and a message sent in between
must queue behind those, not overtake them (seen: an OPTIONS overtaken by the next INVITE)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.bench_glue import make_server
from proxy.sip.addresses import Outgoing, Target


async def _order_through_a_dial(tmp_path: Path) -> list[bytes]:
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    accepted = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        while len(b"".join(received)) < len(b"firstsecond"):
            data = await reader.read(100)
            if not data:
                break
            received.append(data)
        writer.close()

    peer = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    server, _ = make_server(tmp_path)
    server._loop = loop
    target = Target("tcp", "127.0.0.1", port)
    made = server.on_connection_made

    def made_then_send_next(connection: object) -> None:  # the race, made certain
        made(connection)  # type: ignore[arg-type]
        server._send(Outgoing(b"second", target))

    server.on_connection_made = made_then_send_next  # type: ignore[method-assign]
    server._send(Outgoing(b"first", target))
    for _ in range(200):  # bounded: 2 s
        if b"".join(received) == b"firstsecond":
            break
        await asyncio.sleep(0.01)
    for connection in list(server._connections.values()):
        connection.abort()
    peer.close()
    await peer.wait_closed()
    return received


def test_a_message_sent_while_the_connection_is_made_queues_behind_the_first(
    tmp_path: Path,
) -> None:
    assert b"".join(asyncio.run(_order_through_a_dial(tmp_path))) == b"firstsecond"

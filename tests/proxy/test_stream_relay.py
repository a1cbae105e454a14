"""TCP on the shared port with `--workers`: the worker holding a connection sends each message
whose Call-ID names another worker there, and sends that worker's answers on the connection
(proxy/stream_relay.py). A WorkerServer on a real loopback connection, its socket to the
supervisor a socket pair this test reads and writes as the supervisor would."""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.active_rules import ActiveRules
from proxy.dispatcher import Packet, StreamHop, decode_packet, encode_header
from proxy.server import ServerSettings
from proxy.sip.addresses import Outgoing, Source, Target
from proxy.stream_relay import REMOTE_STREAMS, StreamRelay, holder_of, remote_stream
from proxy.worker_process import WorkerInbox, WorkerServer
from tests.proxy.example_server import CONFIG, ROOT

WORKERS = 2


def call_id_for(worker: int) -> str:
    """A Call-ID the dispatcher's hash gives to `worker` (of WORKERS)."""
    for number in range(1000):
        call_id = f"c{number}@pbx"
        if zlib.crc32(call_id.encode()) % WORKERS == worker:
            return call_id
    raise AssertionError("no such Call-ID")


def request(call_id: str, max_forwards: int = 70) -> bytes:
    branch = call_id.replace("@", "-")
    return (
        "OPTIONS sip:+442079460000@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-{branch}\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        "From: <sip:1002@127.0.0.1>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@given(st.integers(0, 255), st.integers(1, 2**40 - 1))
def test_remote_ids_round_trip_and_never_meet_a_workers_own(holder: int, connection: int) -> None:
    remote = remote_stream(holder, connection)
    assert remote is not None and remote >= REMOTE_STREAMS
    assert holder_of(remote) == (holder, connection)
    assert holder_of(connection) is None  # a worker's own connection ids: never a remote one
    assert holder_of(-1 - holder) is None  # nor a shared UDP socket's


@pytest.mark.parametrize(("holder", "connection"), [(256, 1), (-1, 1), (0, 0), (0, 2**40)])
def test_remote_ids_out_of_range(holder: int, connection: int) -> None:
    assert remote_stream(holder, connection) is None


def test_packets_carry_what_the_other_side_needs() -> None:
    relay = StreamRelay(1, WORKERS)
    source = Source("tls", "::1", 40000, 7)
    message = decode_packet(relay.message_packet(0, b"BYE", source) or b"")
    assert message == Packet("::1", 40000, 0, b"BYE", False, StreamHop(0, 1, 7, "tls"))
    remote = remote_stream(0, 7)
    answer = Outgoing(b"SIP/2.0 200 OK", Target("tls", "::1", 40000), remote, True)
    reply = decode_packet(relay.reply_packet(answer) or b"")
    assert reply == Packet("::1", 40000, 0, b"SIP/2.0 200 OK", False,
                           StreamHop(0, 0, 7, "tls", True, True))
    assert relay.reply_packet(Outgoing(b"x", Target("tcp", "::1", 1), 7)) is None  # own id


@dataclass
class Holder:
    server: WorkerServer
    supervisor: socket.socket  # the supervisor's end of the worker's inbox
    port: int  # the shared listener

    async def packets(self, count: int) -> list[Packet]:
        got: list[Packet] = []
        loop = asyncio.get_running_loop()
        for _ in range(count):
            raw = await asyncio.wait_for(loop.sock_recv(self.supervisor, 70000), 5)
            packet = decode_packet(raw)
            assert packet is not None
            got.append(packet)
        return got

    def deliver(self, packet: bytes) -> None:
        """What the supervisor passes on to this worker."""
        self.supervisor.send(packet)
        assert self.server.inbox is not None
        self.server.inbox.on_readable(self.server)


@asynccontextmanager
async def holder(tmp_path: Path, index: int = 0) -> AsyncIterator[Holder]:
    settings = ServerSettings(listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid")
    rules = ActiveRules.load(ROOT / "rules" / "example.yaml")
    server = WorkerServer(CONFIG, rules, settings, StreamRelay(index, WORKERS))
    ours, supervisor = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    supervisor.setblocking(False)
    server.inbox = WorkerInbox(ours)
    listener = socket.create_server(("127.0.0.1", 0))
    await server.adopt_listening_socket(listener)
    try:
        yield Holder(server, supervisor, listener.getsockname()[1])
    finally:
        await server.stop()
        listener.close()
        ours.close()
        supervisor.close()


async def connect(port: int, host: str = "127.0.0.1") -> tuple[asyncio.StreamReader,
                                                              asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def _relay_and_answer(tmp_path: Path) -> None:
    async with holder(tmp_path) as worker:
        reader, writer = await connect(worker.port)
        # ours: answered here (483: no hops left, RFC 3261 16.3 step 3); theirs: relayed
        mine, theirs = request(call_id_for(0), max_forwards=0), request(call_id_for(1))
        received = worker.server.core.counters["received"]
        writer.write(theirs + mine)
        (packet,) = await worker.packets(1)
        assert packet.datagram == theirs and packet.stream is not None
        hop = packet.stream
        assert (hop.to, hop.holder, hop.transport, hop.reply) == (1, 0, "tcp", False)
        assert (packet.host, packet.port) == writer.get_extra_info("sockname")
        await wait_for(lambda: worker.server.core.counters["received"] == received + 1)
        # the other worker's answer, through the supervisor, leaves on the connection
        answer = StreamHop(0, 0, hop.connection, "tcp", reply=True)
        worker.deliver(encode_header(packet.host, packet.port, stream=answer) + b"ANSWER\r\n")
        ours = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert ours.startswith(b"SIP/2.0 483 ") and call_id_for(0).encode() in ours
        assert await asyncio.wait_for(reader.readexactly(8), 5) == b"ANSWER\r\n"
        counters = worker.server.relay.counters
        assert (counters["stream_relayed_out"], counters["stream_replies_sent"]) == (1, 1)
        writer.close()


def test_a_message_for_the_other_worker_goes_there_and_its_answer_comes_back(
    tmp_path: Path,
) -> None:
    asyncio.run(_relay_and_answer(tmp_path))


async def _owner_answers_through_the_holder(tmp_path: Path) -> None:
    async with holder(tmp_path, index=1) as owner:
        hop = StreamHop(1, 0, 42, "tcp")
        loop_guard = request(call_id_for(1), max_forwards=0)  # the core answers it: 483
        owner.deliver(encode_header("127.0.0.1", 40000, stream=hop) + loop_guard)
        (packet,) = await owner.packets(1)
        assert packet.stream == StreamHop(0, 0, 42, "tcp", reply=True)
        assert (packet.host, packet.port) == ("127.0.0.1", 40000)
        assert packet.datagram.startswith(b"SIP/2.0 483 ")
        assert owner.server.relay.counters["stream_relayed_in"] == 1
        # a message not for this worker is not handled here
        owner.deliver(encode_header("127.0.0.1", 40000, stream=StreamHop(0, 1, 42)) + loop_guard)
        assert owner.server.relay.counters["stream_misdirected"] == 1


def test_the_owner_handles_it_and_answers_through_the_holder(tmp_path: Path) -> None:
    asyncio.run(_owner_answers_through_the_holder(tmp_path))


async def _outsider_kept(tmp_path: Path) -> None:
    async with holder(tmp_path) as worker:
        reader, writer = await connect(worker.port, host="127.0.0.2")  # not the PBX, not a trunk
        writer.write(request(call_id_for(1)))
        answer = await asyncio.wait_for(reader.read(), 5)  # refused here, then closed
        assert answer.startswith(b"SIP/2.0 403 ") or answer == b"", answer
        assert worker.server.relay.counters["stream_relayed_out"] == 0
        with pytest.raises(BlockingIOError):
            worker.supervisor.recv(70000)
        writer.close()


def test_an_outsider_is_refused_by_the_holder_never_relayed(tmp_path: Path) -> None:
    asyncio.run(_outsider_kept(tmp_path))


async def _full_socket(tmp_path: Path) -> None:
    async with holder(tmp_path) as worker:
        assert worker.server.inbox is not None
        worker.server.inbox.send_stream_packet = lambda packet: False  # type: ignore[method-assign]
        _reader, writer = await connect(worker.port)
        received = worker.server.core.counters["received"]
        writer.write(request(call_id_for(1)))
        await wait_for(lambda: worker.server.core.counters["received"] == received + 1)
        assert worker.server.relay.counters["stream_kept_unrelayable"] == 1
        writer.close()


def test_a_message_that_cannot_be_relayed_is_handled_by_the_holder(tmp_path: Path) -> None:
    asyncio.run(_full_socket(tmp_path))


async def _stale_id(tmp_path: Path) -> None:
    async with holder(tmp_path) as worker:
        reader, writer = await connect(worker.port)
        writer.write(request(call_id_for(1)))
        (packet,) = await worker.packets(1)
        assert packet.stream is not None
        # The answer names this connection's id, but another peer: an id from before this
        # worker restarted. It goes to that peer (dialled, as any answer whose connection is
        # gone), not on this connection.
        other = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            got.set_result(await r.readexactly(6))

        other.close()
        other = await asyncio.start_server(accept, "127.0.0.1", 0)
        other_port = other.sockets[0].getsockname()[1]
        stale = StreamHop(0, 0, packet.stream.connection, "tcp", reply=True)
        worker.deliver(encode_header("127.0.0.1", other_port, stream=stale) + b"STALE\n")
        assert await asyncio.wait_for(got, 5) == b"STALE\n"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        other.close()
        writer.close()


def test_an_answer_for_another_peer_never_goes_on_this_connection(tmp_path: Path) -> None:
    asyncio.run(_stale_id(tmp_path))

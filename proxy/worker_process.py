"""One worker of `callerid-proxy run --workers N`: a whole proxy on its own ports, plus what the
supervisor hands it (dispatched datagrams from the shared UDP port, the shared TCP listener).

Worker `i` listens on every `--listen` host at that listen port + 1 + i (UDP and TCP), sends
from there and writes that port into its Via and Record-Route, so responses and in-dialog
requests come straight back to it. The shared address stays in its advertised addresses, so
a Route naming the shared address is still recognised as ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import log_summary, reply_port
from proxy.active_rules import ActiveRules
from proxy.dispatcher import Packet, decode_packet, encode_header
from proxy.gc_monitor import GcPacer, apply_gc_policy
from proxy.server import ProxyServer, ServerSettings
from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.policy import ProxyConfig
from proxy.stream_relay import REMOTE_STREAMS, StreamRelay, remote_stream
from proxy.transport import TcpConnection

log = logging.getLogger("callerid_proxy.worker")
INBOX_BATCH = 64
MAX_PACKET = 65535 + 128

BuildSettings = Callable[[dict[str, Any]], tuple[ProxyConfig, ServerSettings, Path]]


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells one worker process (the hidden `--worker-spec` option)."""

    index: int
    inbox_fd: int  # Unix datagram socket: dispatched datagrams from the shared UDP port
    lifeline_fd: int  # read end of a pipe the supervisor holds open: EOF = supervisor gone
    tcp_fds: tuple[int, ...]  # the shared TCP listening sockets, one per --listen address
    send_direct: bool = False  # replies may leave from our own socket on the shared port
    workers: int = 1  # how many there are: a TCP message goes to the one its Call-ID names

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        return cls(
            index=int(data["index"]),
            inbox_fd=int(data["inbox_fd"]),
            lifeline_fd=int(data["lifeline_fd"]),
            tcp_fds=tuple(int(fd) for fd in data["tcp_fds"]),
            send_direct=bool(data.get("send_direct", False)),
            workers=int(data.get("workers", 1)),
        )


def worker_port(port: int, index: int) -> int:
    """The port worker `index` uses on a host whose shared listen port is `port`."""
    return port + 1 + index


def worker_listen(listen: Sequence[tuple[str, int]], index: int) -> list[tuple[str, int]]:
    return [(host, worker_port(port, index)) for host, port in listen]


def hostport_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def shared_connection(socket_index: int) -> int:
    """The `Source.connection` of a datagram dispatched from shared socket `socket_index`. TCP
    connection ids are positive; the core copies a source's `connection` into the replies of
    its transactions, which is how a reply finds its way back to the shared port."""
    return -1 - socket_index


def shared_socket_of(connection: int | None) -> int | None:
    return -1 - connection if connection is not None and connection < 0 else None


class WorkerInbox:
    """Reads the datagrams the dispatcher forwards and feeds them to the server as received
    from their original source (trust is judged on that address); sends the replies to them
    back to the dispatcher, which sends them from the shared port."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.malformed = 0
        self.reply_drops = 0
        sock.setblocking(False)

    def reply(self, outgoing: Outgoing, socket_index: int) -> None:
        target = outgoing.target
        try:
            self._sock.send(encode_header(target.host, target.port, socket_index) + outgoing.data)
        except (BlockingIOError, ValueError):  # full like a UDP buffer, or not an IP literal
            self.reply_drops += 1

    def send_stream_packet(self, packet: bytes) -> bool:
        """A stream packet for another worker (proxy/stream_relay.py); False when the socket to
        the supervisor has no room for it now."""
        try:
            self._sock.send(packet)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as error:
            log.warning("stream packet for another worker not sent: %s", error.strerror)
            return False
        return True

    def on_readable(self, server: WorkerServer) -> None:
        for _ in range(INBOX_BATCH):
            try:
                packet = decode_packet(self._sock.recv(MAX_PACKET))
            except (BlockingIOError, InterruptedError):
                return
            if packet is None:
                self.malformed += 1
                log.warning("malformed datagram from the dispatcher dropped")
                continue
            if packet.stream is not None:
                server.on_stream_packet(packet)
                continue
            source = Source("udp", packet.host, packet.port, shared_connection(packet.socket))
            if packet.shed:
                server.on_shed_by_dispatcher(packet.datagram, source)
            else:
                server.on_message(packet.datagram, source)


class WorkerServer(ProxyServer):
    """A ProxyServer whose UDP replies to requests dispatched from the shared port leave from
    that port: from its own socket on it (proxy/reply_port.py) or through the dispatcher;
    everything else leaves from the worker's own port."""

    def __init__(
        self, config: ProxyConfig, rules: ActiveRules, settings: ServerSettings,
        relay: StreamRelay | None = None,
    ) -> None:
        super().__init__(config, rules, settings)
        self.inbox: WorkerInbox | None = None
        self.shared_senders: list[socket.socket] = []
        self.reply_drops = 0
        self.relay = relay or StreamRelay(0, 1)

    # ------------------------------------------- TCP/TLS on the shared port (stream_relay.py)
    def _adopted_connection(self, host: str) -> TcpConnection:
        """On the shared port's listener: this connection's calls are spread over the workers."""
        connection = self._accepted_connection(host)
        self.relay.shared.add(connection.id)
        return connection

    def on_connection_closed(self, connection: TcpConnection) -> None:
        self.relay.shared.discard(connection.id)
        super().on_connection_closed(connection)

    def on_message(self, data: bytes, source: Source) -> None:
        if source.connection in self.relay.shared and self._relayed(data, source):
            return
        super().on_message(data, source)

    def _relayed(self, data: bytes, source: Source) -> bool:
        """Sent to the worker its Call-ID names, if that is another and the peer is one we
        serve (an outsider is refused here, and its connection closed, as always)."""
        relay = self.relay
        owner = relay.owner(data, source)
        if owner == relay.index or self.inbox is None:
            return False
        connection = self._connections.get(source.connection or 0)
        if connection is None or not connection.trusted:
            return False
        packet = relay.message_packet(owner, data, source)
        if packet is None or not self.inbox.send_stream_packet(packet):
            relay.counters["stream_kept_unrelayable"] += 1
            return False  # handled here rather than lost: nothing retransmits over TCP
        relay.counters["stream_relayed_out"] += 1
        return True

    def on_stream_packet(self, packet: Packet) -> None:
        """From another worker: a message read from its connection (ours to handle), or what
        we answered on one of ours (to send on it)."""
        hop = packet.stream
        assert hop is not None
        relay = self.relay
        if not hop.reply:
            connection = remote_stream(hop.holder, hop.connection)
            if hop.to != relay.index or connection is None:
                relay.counters["stream_misdirected"] += 1
                return
            relay.counters["stream_relayed_in"] += 1
            self.on_message(packet.datagram, Source(hop.transport, packet.host, packet.port,
                                                    connection))  # fmt: skip
            return
        target = Target(hop.transport, packet.host, packet.port)
        own = self._connections.get(hop.connection)
        # An id this worker's previous life gave to a connection now closed may name another
        # peer's connection today: only the same peer's is the one the answer belongs to.
        same_peer = own is not None and own.peer == (target.host, target.port)
        connection = hop.connection if same_peer else None
        relay.counters["stream_replies_sent"] += 1
        ProxyServer._send(self, Outgoing(packet.datagram, target, connection, hop.close_after))

    def _send(self, outgoing: Outgoing) -> None:
        if outgoing.connection is not None and outgoing.connection >= REMOTE_STREAMS:
            self._send_to_holder(outgoing)
            return
        shared = shared_socket_of(outgoing.connection)
        if shared is None or outgoing.target.transport != "udp" or self.inbox is None:
            super()._send(outgoing)
            return
        if not outgoing.data:
            return
        if shared < len(self.shared_senders):
            target = outgoing.target
            try:
                self.shared_senders[shared].sendto(outgoing.data, (target.host, target.port))
            except OSError:  # a full buffer or an ICMP error: as any UDP send
                self.reply_drops += 1
            return
        self.inbox.reply(outgoing, shared)

    def _send_to_holder(self, outgoing: Outgoing) -> None:
        """An answer on a connection another worker holds: sent there to go out on it."""
        packet = self.relay.reply_packet(outgoing)
        if packet is None or self.inbox is None or not self.inbox.send_stream_packet(packet):
            self.relay.counters["stream_reply_drops"] += 1
            log.warning("an answer for %s:%s over another worker's connection was dropped",
                        outgoing.target.host, outgoing.target.port)
            return
        self.relay.counters["stream_replies_relayed"] += 1

    def status(self) -> dict[str, Any]:
        status = super().status()
        inbox = self.inbox
        status["counters"] = {
            **status["counters"],
            **self.relay.counters,
            "shared_reply_drops": self.reply_drops + (inbox.reply_drops if inbox else 0),
            "dispatched_malformed": inbox.malformed if inbox else 0,
        }
        return status

    def serve_shared_sender(self, index: int, sock: socket.socket) -> None:
        """Should anything arrive on our socket on the shared port, serve it as dispatched."""
        for _ in range(INBOX_BATCH):
            try:
                data, address = sock.recvfrom(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            source = Source("udp", str(address[0]), int(address[1]), shared_connection(index))
            self.on_message(data, source)


def run_worker(
    spec: WorkerSpec, settings: dict[str, Any], build: BuildSettings, active: ActiveRules
) -> None:
    """Serve as worker `spec.index` until SIGTERM or until the supervisor is gone."""
    tag = WorkerLogTag(spec.index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
    config, server_settings = worker_settings(spec.index, settings, build)
    shared = [_parse_listen(str(item)) for item in settings.get("listen") or []]
    asyncio.run(_serve(spec, config, active, server_settings, shared))


class WorkerLogTag(logging.Filter):
    """Names the worker in every log line it writes: `callerid_proxy.server[w1]`."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._suffix = f"[w{index}]"

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.endswith(self._suffix):
            record.name += self._suffix
        return True


def worker_settings(
    index: int, settings: dict[str, Any], build: BuildSettings
) -> tuple[ProxyConfig, ServerSettings]:
    """Worker `index`'s view: it listens on its own ports only, and advertises them first (Via
    and Record-Route name the first address of each kind); the shared addresses stay
    recognised as ours (a Route a PBX preloads with the shared address is still popped)."""
    shared_config, _, _ = build(settings)
    shared = [_parse_listen(str(item)) for item in settings.get("listen") or []]
    own = [hostport_text(*address) for address in worker_listen(shared, index)]
    config, server_settings, _ = build({**settings, "listen": own})
    advertised = (*config.advertised,
                  *(t for t in shared_config.advertised if t not in config.advertised))
    return dataclasses.replace(config, advertised=advertised), server_settings


def _parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def _serve(
    spec: WorkerSpec, config: ProxyConfig, active: ActiveRules, settings: ServerSettings,
    shared: list[tuple[str, int]],
) -> None:
    loop = asyncio.get_running_loop()
    server = WorkerServer(config, active, settings, StreamRelay(spec.index, spec.workers))
    summary = log_summary.install()  # refusals and drops: one example, then a summary line
    server.ticker.add(summary.flush)
    await server.start()
    # Ctrl-C reaches the whole process group: only the supervisor acts on it, and stops us.
    loop.remove_signal_handler(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in spec.tcp_fds:
        await server.adopt_listening_socket(socket.socket(fileno=fd))
    server.inbox = WorkerInbox(socket.socket(fileno=spec.inbox_fd))
    loop.add_reader(spec.inbox_fd, server.inbox.on_readable, server)
    if spec.send_direct:
        server.shared_senders = [reply_port.bind_sender(host, port) for host, port in shared]
        for index, sock in enumerate(server.shared_senders):
            loop.add_reader(sock.fileno(), server.serve_shared_sender, index, sock)
    loop.add_reader(spec.lifeline_fd, _supervisor_gone, loop, spec.lifeline_fd)
    log.info("worker %d ready on %s", spec.index,
             ", ".join(hostport_text(h, p) for h, p in settings.listen))
    apply_gc_policy()
    with server.gc_monitor.installed(), GcPacer().running(asyncio.get_running_loop()):
        # times every collection; young ones every 50 ms (proxy/gc_monitor.py)
        await server.serve_until_stopped()
    loop.remove_reader(spec.inbox_fd)


def _supervisor_gone(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """The supervisor's end of the lifeline closed: it died without stopping us. Stop."""
    loop.remove_reader(fd)
    log.error("the supervisor is gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)

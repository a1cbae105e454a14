"""asyncio adapters: UDP endpoints and TCP connections hand bytes to the server and send its output.

They know nothing of SIP beyond framing a TCP stream with the sans-IO `StreamFramer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from proxy.sip.addresses import Source, Target
from proxy.sip.framing import DEFAULT_MAX_MESSAGE, Frame, StreamFramer

log = logging.getLogger("callerid_proxy.transport")


class MessageSink(Protocol):
    def on_message(self, data: bytes, source: Source) -> None: ...

    def on_broken_stream(self, frame: Frame, source: Source) -> None: ...

    def on_connection_made(self, connection: TcpConnection) -> None: ...

    def on_connection_closed(self, connection: TcpConnection) -> None: ...


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, sink: MessageSink) -> None:
        self.sink = sink
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; same interface.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])
        self.sink.on_message(data, Source("udp", host, port))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers deal with the silence.
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, target: Target) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (target.host, target.port))


class TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or dialled. Idle connections are closed after `idle_timeout`."""

    transport_name = "tcp"  # what its messages' Source says; TLS (proxy/tls.py) frames the same

    def __init__(
        self,
        sink: MessageSink,
        connection_id: int,
        *,
        dialled: Target | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        idle_timeout: float = 120.0,
    ) -> None:
        self.id = connection_id
        self.sink = sink
        self.dialled = dialled
        self.framer = StreamFramer(max_message)
        self.idle_timeout = idle_timeout
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self._idle: asyncio.TimerHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if not peer:  # reset before we got to accept it: nothing to talk to
            log.debug("tcp connection gone before it was accepted")
            transport.close()
            return
        self.peer = (str(peer[0]), int(peer[1]))
        self._touch()
        self.sink.on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        self._touch()
        source = Source(self.transport_name, self.peer[0], self.peer[1], self.id, self.dialled)
        for frame in self.framer.feed(data):
            if frame.fatal:
                self.sink.on_broken_stream(frame, source)
            else:
                self.sink.on_message(frame.data, source)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self.sink.on_connection_closed(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._touch()
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.framer.pending:
            log.warning("tcp %s:%s: incomplete message after idle timeout, closing", *self.peer)
        self.close()


ConnectionFactory = Callable[[], TcpConnection]

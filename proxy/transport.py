"""asyncio adapters: UDP endpoints and TCP connections hand bytes to the server and send its output.

They know nothing of SIP beyond framing a TCP stream with the sans-IO `StreamFramer`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import struct
import sys
import termios
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from proxy.sip.addresses import Source, Target
from proxy.sip.framing import DEFAULT_MAX_MESSAGE, Frame, StreamFramer
from proxy.tcp_accept import TcpLimits
from proxy.udp_errors import read_errors

log = logging.getLogger("callerid_proxy.transport")
PROBE_PREFIX = b"\x00callerid-proxy queue probe "
MAX_PROBES = 64  # outstanding at once (one is sent per overload check)
FRAMES_PER_TURN = 16  # TCP messages handled per loop turn and connection
FEED_SLICE = 16 * 1024  # bytes given to the stream framer at once
SOURCES_KEPT = 256  # peer addresses whose Source a UDP endpoint keeps (see `_source_of`)
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux 4.12+: a socket's memory, u32 fields
SK_MEMINFO_FIELDS = 9  # SK_MEMINFO_VARS; field 0 (SK_MEMINFO_RMEM_ALLOC): receive queue bytes


class MessageSink(Protocol):
    def on_message(self, data: bytes, source: Source) -> None: ...

    def on_broken_stream(self, frame: Frame, source: Source) -> None: ...

    def on_connection_made(self, connection: TcpConnection) -> None: ...

    def on_connection_closed(self, connection: TcpConnection) -> None: ...

    def on_unreachable(self, target: Target) -> None: ...


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket. `sock`, when given, is that socket with its error queue enabled
    (proxy/udp_errors.py): an ICMP "unreachable" then tells the sink which destination at once.

    `probe()` sends a datagram to the socket itself, through the same kernel queue as the peers'
    datagrams: how long it takes to come back out (its sojourn) is how long a new INVITE waits
    now, which the loop's own lateness does not show (the loop is never late while it drains
    datagrams one by one). A probe carries a random token of this endpoint and the time it was
    sent; it never leaves the host."""

    def __init__(self, sink: MessageSink, sock: socket.socket | None = None) -> None:
        self.sink = sink
        self.sock = sock
        self.transport: asyncio.DatagramTransport | None = None
        self._send_failed = False
        self._token = PROBE_PREFIX + os.urandom(16)
        self._probe_size = len(self._token) + 8
        self._probe_to: tuple[str, int] | None = None
        self._outstanding: deque[float] = deque()  # send times of probes not yet back
        self.sojourns: list[float] = []  # of the probes back since `take_sojourns`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._meminfo_missing = False
        self._sources: dict[tuple[str | int, ...], Source] = {}  # peer address -> its Source

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; same interface.
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        sockname = transport.get_extra_info("sockname")
        if sockname:
            host = str(sockname[0])
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            self._probe_to = (host, int(sockname[1]))

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) == self._probe_size and data.startswith(self._token):
            self._probe_back(data)
            return
        source = self._sources.get(addr)
        if source is None:
            source = self._source_of(addr)
        self.sink.on_message(data, source)

    def _source_of(self, addr: tuple[str | int, ...]) -> Source:
        """The Source of a peer address, made once per peer (a PBX and a few trunks send
        nearly every datagram) instead of once per datagram; forgotten all at once past
        SOURCES_KEPT addresses, so that a spray of senders cannot grow it."""
        if len(self._sources) >= SOURCES_KEPT:
            self._sources.clear()
        source = self._sources[addr] = Source("udp", str(addr[0]), int(addr[1]))
        return source

    def probe(self, now: float) -> None:
        """Send one queue probe (at most MAX_PROBES wait at once)."""
        if self.transport is None or self._probe_to is None:
            return
        if len(self._outstanding) >= MAX_PROBES:
            return
        try:
            self.transport.sendto(self._token + struct.pack("!d", now), self._probe_to)
        except (OSError, ValueError):
            return
        self._outstanding.append(now)

    def probe_unless_idle(self, now: float, queued_bytes: int, *, idle: bool) -> None:
        """The overload check's probe, unless the proxy was `idle` (no message arrived since
        the last check, by any path: this socket, another one, a `--workers` inbox) and
        nothing waits here: none in the kernel (`queued_bytes`), no probe still out. A probe
        then would only measure an empty queue, so its sojourn is taken as 0, without a
        datagram sent, read and woken up for."""
        if idle and queued_bytes == 0 and not self._outstanding:
            self.sojourns.append(0.0)
            return
        self.probe(now)

    def kernel_queue_bytes(self) -> int:
        """Bytes waiting in the socket's receive queue now (the kernel's accounting, about 2.5x
        the payload on loopback), read with SO_MEMINFO: the queue's depth at once, where a probe
        tells its delay only once it is back. 0 where the option is missing (not Linux)."""
        if self.sock is None or self._meminfo_missing:
            return 0
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_FIELDS)
        except OSError:
            self._meminfo_missing = True
            return 0
        return int.from_bytes(raw[:4], sys.byteorder)

    def oldest_probe_age(self, now: float) -> float:
        return now - self._outstanding[0] if self._outstanding else 0.0

    def take_sojourns(self) -> list[float]:
        taken, self.sojourns = self.sojourns, []
        return taken

    def _probe_back(self, data: bytes) -> None:
        (sent,) = struct.unpack("!d", data[-8:])
        outstanding = self._outstanding
        while outstanding and outstanding[0] <= sent:  # loopback keeps the order; lost: gone
            outstanding.popleft()
        if self._loop is not None:
            self.sojourns.append(max(0.0, self._loop.time() - sent))

    def error_received(self, exc: Exception) -> None:
        """A receive or a send met a pending ICMP error (both loops call this, a send from
        inside `sendto`): read which destinations were unreachable."""
        self._send_failed = True
        log.debug("udp error: %s", exc)
        if self.sock is None:
            return  # the transaction timers deal with the silence
        for error in read_errors(self.sock):
            if error.unreachable:
                self.sink.on_unreachable(Target("udp", error.host, error.port))

    def send(self, data: bytes, target: Target) -> None:
        if self.transport is None:
            return
        self._send_failed = False
        self.transport.sendto(data, (target.host, target.port))
        if self._send_failed and self.sock is not None:
            # The error was an earlier datagram's and this one was not sent; the queue is read
            # and the error cleared now, so once more (a second failure is left to retransmits).
            self.transport.sendto(data, (target.host, target.port))


class TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or dialled.

    - Idle: closed after `idle_timeout` without a complete message either way; a byte alone does
      not count, so a peer trickling one byte a second is not "active".
    - Slow senders: a message must arrive whole within `limits.message_deadline` of its first
      byte, else the connection is closed.
    - Untrusted (`trusted=False`): the proxy serves nothing to such a source, so after its first
      message has been answered (a refusal) the connection is closed and the rest unread; one
      that sends nothing is closed at the message deadline too.
    - Backpressure: a peer that does not read is cut off once more than
      `limits.max_write_buffer` bytes wait for it in the transport.
    """

    transport_name = "tcp"  # what its messages' Source says; TLS (proxy/tls.py) frames the same

    def __init__(
        self,
        sink: MessageSink,
        connection_id: int,
        *,
        dialled: Target | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        idle_timeout: float = 120.0,
        limits: TcpLimits | None = None,
        trusted: bool = True,
        counters: Counter[str] | None = None,
        accepted_from: str | None = None,
    ) -> None:
        """`accepted_from`: the source address an accepted connection was admitted for (what
        the caps counted), released when it closes, even if it never got a peer name."""
        self.id = connection_id
        self.accepted_from = accepted_from
        self.sink = sink
        self.dialled = dialled
        self.framer = StreamFramer(max_message)
        self.idle_timeout = idle_timeout
        self.limits = limits or TcpLimits()
        self.trusted = trusted
        self._counted_untrusted_close = False
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        # What its messages say they came from; the peer's address is put in once connected.
        self._source = Source(self.transport_name, "", 0, connection_id, dialled)
        self._idle: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._last_active = self._loop.time()
        self._frames: deque[Frame] = deque()  # framed, not yet handled (FRAMES_PER_TURN)
        self._continuing = False
        self._paused_reading = False
        self.bytes_handled = 0  # of messages handed on, for the overload check's backlog estimate
        self.bytes_at_sample = 0
        self._frames_bytes = 0  # in `_frames`
        self._fileno = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if not peer:  # reset before we got to accept it: nothing to talk to
            log.debug("tcp connection gone before it was accepted")
            transport.close()
            return
        self.peer = (str(peer[0]), int(peer[1]))
        # Made once, not once per read.
        self._source = Source(self.transport_name, *self.peer, self.id, self.dialled)
        sock = transport.get_extra_info("socket")
        self._fileno = sock.fileno() if sock is not None else -1
        transport.set_write_buffer_limits(high=self.limits.max_write_buffer)  # type: ignore[attr-defined]
        self._touch()
        if not self.trusted:  # it gets one refusal at most: its whole life is one deadline
            self._deadline = asyncio.get_running_loop().call_later(
                self.limits.message_deadline, self._on_deadline
            )
        self.sink.on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        self._guarded(self._received, data)

    def _guarded(self, handle: Callable[[bytes], None], data: bytes = b"") -> None:
        try:
            handle(data)
        except Exception as error:  # never "Fatal error on transport": count, log, close
            self.counters["tcp_stream_errors"] += 1
            log.warning("tcp %s:%s: cannot handle the stream (%s: %.200s), closing",
                        self.peer[0], self.peer[1], type(error).__name__, error)
            self.abort()

    def _received(self, data: bytes) -> None:
        frames = self._frames
        framer = self.framer
        before = len(frames)
        if len(data) <= FEED_SLICE:
            frames.extend(framer.feed(data))
        else:  # one read can be 256 KB: framed in slices, so the framer's buffer stays small
            for offset in range(0, len(data), FEED_SLICE):
                frames.extend(framer.feed(data[offset : offset + FEED_SLICE]))
        started = len(frames) > before
        if started:
            self._frames_bytes += len(data)  # about: what is framed of it, give or take a part
        if not started and not framer.pending and self.trusted and not frames:
            self._touch()  # an RFC 5626 CRLF keep-alive from a peer we serve
        self._watch_message(started_now=started)
        if not self._continuing:  # else the turn already scheduled takes these after the rest
            self._handle_frames(b"")

    def _handle_frames(self, _data: bytes) -> None:
        """At most FRAMES_PER_TURN messages per loop turn: a peer that sent a burst (a read is
        up to 256 KB, and the loop reads a stream up to 32 times in a row) cannot hold the loop
        for seconds while the other connections, the UDP socket and the timers wait (the
        trunk's answers to calls already admitted among them). The rest waits in `_frames`,
        with reading paused, until the next turn."""
        self._continuing = False
        frames = self._frames
        source = self._source
        for _ in range(min(len(frames), FRAMES_PER_TURN)):
            frame = frames.popleft()
            size = len(frame.data)
            self.bytes_handled += size
            self._frames_bytes = max(0, self._frames_bytes - size)
            self._touch()
            if frame.fatal:
                self.sink.on_broken_stream(frame, source)
            else:
                self.sink.on_message(frame.data, source)
            if not self.trusted:  # one answer for an outsider, then closed (by us or the core)
                frames.clear()
                self._close_untrusted()
                return
            if not self.alive:
                frames.clear()
                return
        if not frames:
            self._frames_bytes = 0
        if frames:
            self._pause_reading()
            self._continuing = True
            self._loop.call_soon(self._guarded, self._handle_frames)
        elif self._paused_reading:
            self._paused_reading = False
            if self.alive and self.transport is not None:
                self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.alive and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    @property
    def waiting(self) -> bool:
        """Messages framed and not yet handled (reading is paused meanwhile)."""
        return bool(self._frames)

    def queued_bytes(self) -> int:
        """Bytes waiting to be handled: those framed and not handed on yet, and those the
        kernel holds for us unread (FIONREAD, when it can be read)."""
        if self._fileno < 0 or not self.alive:
            return self._frames_bytes
        try:
            buffer = fcntl.ioctl(self._fileno, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return self._frames_bytes
        return self._frames_bytes + int(struct.unpack("i", buffer)[0])

    def _close_untrusted(self) -> None:
        if self.transport is not None and not self._counted_untrusted_close:
            self._counted_untrusted_close = True
            self.counters["tcp_closed_untrusted"] += 1
        if self.alive:
            self.close()

    def _watch_message(self, *, started_now: bool) -> None:
        """Arm the whole-message deadline at the first byte of a message; clear it when none is
        pending. The deadline is not moved by later bytes of the same message."""
        if not self.framer.pending:
            self._cancel_deadline()
            return
        if self._deadline is not None and not started_now:
            return
        self._cancel_deadline()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.limits.message_deadline, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if not self.framer.pending:  # an untrusted connection that never sent anything
            self.counters["tcp_untrusted_silent"] += 1
            self.abort()
            return
        self.counters["tcp_message_deadline"] += 1
        log.warning(
            "tcp %s:%s: message not complete within %gs of its first byte, closing",
            self.peer[0], self.peer[1], self.limits.message_deadline,
        )  # fmt: skip
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._cancel_deadline()
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self.sink.on_connection_closed(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._touch()
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > self.limits.max_write_buffer:
                self.pause_writing()

    def pause_writing(self) -> None:
        """The peer does not read what we send: cut it off rather than queue without bound."""
        if not self.alive:
            return
        self.counters["tcp_write_buffer_full"] += 1
        log.warning(
            "tcp %s:%s: peer does not read (over %d bytes queued), disconnecting",
            self.peer[0], self.peer[1], self.limits.max_write_buffer,
        )  # fmt: skip
        self.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _touch(self) -> None:
        """Activity: the idle timer is armed once and, when it fires early, re-armed for the
        rest (not cancelled and re-created per message)."""
        self._last_active = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_at(self._last_active + self.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        due = self._last_active + self.idle_timeout
        if due > self._loop.time() and self.transport is not None:
            self._idle = self._loop.call_at(due, self._on_idle)
            return
        if self.framer.pending:
            log.warning("tcp %s:%s: incomplete message after idle timeout, closing", *self.peer)
        self.close()


ConnectionFactory = Callable[[], TcpConnection]

"""The `--workers` dispatcher: a thread of the supervisor that serves the shared UDP port.

Each datagram goes to the worker `proxy.dispatcher.worker_for` names (by Call-ID), over that
worker's private Unix datagram socket, with the original source address in front. The worker
sends its replies to those requests back over the same socket, and the thread sends them from
the shared socket the request came in on (RFC 3581 section 4: a response leaves from the
address and port its request was received on). When a
worker's socket is full (the worker is busy, or dead and being restarted) datagrams wait in a
bounded per-worker backlog, in order; beyond it they are dropped and counted, as a full UDP
receive buffer would drop them.

The workers shed load by the wait they see (proxy/server.py, proxy/overload.py), but not the
wait in that backlog, which is the dispatcher's: far past capacity it held a new INVITE for
seconds before its worker even read it, and the 503 came that late (issue 6). So once the
oldest datagram waiting for a worker has waited `shed_after` (the workers' `--max-loop-lag`),
a new INVITE for that worker (no To tag, `shed_glance`) goes ahead of the backlog flagged
"shed": the worker answers it 503 at once, from its glance, with its own checks (trust, and a
retransmission of an INVITE it admitted gets its transaction's answer instead, RFC 3261
17.2.1). Everything else keeps its place, so in-dialog requests, responses and CANCELs flow in
order; the INVITEs sent ahead are new calls, whose messages nothing waiting can precede.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from proxy.dispatcher import decode_packet, encode_header, worker_for
from proxy.sip.untrusted import shed_glance

log = logging.getLogger("callerid_proxy.dispatcher")
MAX_DATAGRAM = 65535
BATCH = 64  # datagrams read from one socket per poll wake-up
BACKLOG_MAX = 4096  # datagrams waiting for one worker's socket
AHEAD_MAX = 1024  # new INVITEs to be shed, waiting ahead of that backlog
SHED_AFTER_S = 0.1  # the workers' default --max-loop-lag
POLL_MS = 200  # how often the thread looks at its stop flag when idle


@dataclass
class DispatchCounters:
    """Written by the dispatcher thread only; read (racily, for metrics) by the supervisor."""

    dispatched: list[int]
    replies: int = 0
    dropped: int = 0
    backlog_peak: int = 0
    sent_ahead: int = 0  # new INVITEs sent ahead of a backlog to be shed
    relayed: int = 0  # stream packets passed between workers (TCP/TLS on the shared port)
    by_reason: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        shared: list[socket.socket],
        inboxes: list[socket.socket],
        shed_after: float = SHED_AFTER_S,
    ) -> None:
        self._shared = {sock.fileno(): sock for sock in shared}
        self._shared_list = shared
        self._shared_index = {sock.fileno(): index for index, sock in enumerate(shared)}
        self._inboxes = inboxes
        self._inbox_index = {sock.fileno(): index for index, sock in enumerate(inboxes)}
        # What waits for each worker's socket, with when it was read (time.monotonic()), and
        # the new INVITEs to be shed that go before it.
        self._backlog: list[deque[tuple[float, bytes]]] = [deque() for _ in inboxes]
        self._ahead: list[deque[bytes]] = [deque() for _ in inboxes]
        self._shed_after = shed_after
        self.counters = DispatchCounters(dispatched=[0] * len(inboxes))
        self._poller = select.poll()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        for sock in (*shared, *inboxes):
            sock.setblocking(False)

    def start(self) -> None:
        for fd in (*self._shared, *self._inbox_index):
            self._poller.register(fd, select.POLLIN)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._poller.poll(POLL_MS)
            except InterruptedError:
                continue
            for fd, event in events:
                if fd in self._shared:
                    self._drain(self._shared[fd])
                    continue
                index = self._inbox_index[fd]
                if event & select.POLLOUT:
                    self._flush(index)
                if event & select.POLLIN:
                    self._replies(self._inboxes[index])

    def _drain(self, sock: socket.socket) -> None:
        workers = len(self._inboxes)
        socket_index = self._shared_index[sock.fileno()]
        for _ in range(BATCH):
            try:
                data, address = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # nothing of ours; never stop serving for it
                self._drop(f"recv: {error.strerror}")
                return
            host, port = str(address[0]), int(address[1])
            index = worker_for(data, host, port, workers)
            shed = self._to_shed(index, data)
            try:
                packet = encode_header(host, port, socket_index, shed=shed) + data
            except ValueError:
                self._drop("unencodable source")
                continue
            if shed:
                self._send_ahead(index, packet)
            else:
                self._send(index, packet)

    def _to_shed(self, index: int, data: bytes) -> bool:
        """A new INVITE for a worker whose backlog has waited `shed_after` (see above)."""
        backlog = self._backlog[index]
        if not backlog or not data.startswith(b"INVITE "):
            return False
        if time.monotonic() - backlog[0][0] < self._shed_after:
            return False
        return shed_glance(data) is not None

    def _send_ahead(self, index: int, packet: bytes) -> None:
        ahead = self._ahead[index]
        if len(ahead) >= AHEAD_MAX:
            self._drop("worker backlog full")
            return
        ahead.append(packet)
        self.counters.sent_ahead += 1
        self._flush(index)

    def _send(self, index: int, packet: bytes) -> None:
        if self._backlog[index] or self._ahead[index]:  # nothing overtakes what already waits
            self._enqueue(index, packet)
            return
        try:
            self._inboxes[index].send(packet)
        except BlockingIOError:
            self._enqueue(index, packet)
            self._poller.modify(self._inboxes[index], select.POLLIN | select.POLLOUT)
            return
        except OSError as error:
            self._drop(f"send: {error.strerror}")
            return
        self.counters.dispatched[index] += 1

    def _enqueue(self, index: int, packet: bytes) -> None:
        backlog = self._backlog[index]
        if len(backlog) >= BACKLOG_MAX:
            self._drop("worker backlog full")
            return
        backlog.append((time.monotonic(), packet))
        self.counters.backlog_peak = max(self.counters.backlog_peak, len(backlog))

    def _flush(self, index: int) -> None:
        """What waits for this worker, the INVITEs to be shed first, until its socket is full
        (then POLLOUT says when it has room again)."""
        ahead, backlog, inbox = self._ahead[index], self._backlog[index], self._inboxes[index]
        while ahead or backlog:
            packet = ahead[0] if ahead else backlog[0][1]
            try:
                inbox.send(packet)
            except BlockingIOError:
                self._poller.modify(inbox, select.POLLIN | select.POLLOUT)
                return
            except OSError as error:
                self._drop(f"send: {error.strerror}")
            else:
                self.counters.dispatched[index] += 1
            if ahead:
                ahead.popleft()
            else:
                backlog.popleft()
        self._poller.modify(inbox, select.POLLIN)

    def _replies(self, inbox: socket.socket) -> None:
        """Send what a worker answers to a dispatched request from the shared socket; pass a
        stream packet (a TCP/TLS message or its answer, proxy/dispatcher.py) to its worker."""
        for _ in range(BATCH):
            try:
                raw = inbox.recv(MAX_DATAGRAM + 128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._drop(f"reply recv: {error.strerror}")
                return
            packet = decode_packet(raw)
            if packet is not None and packet.stream is not None:
                self._relay(packet.stream.to, raw)
                continue
            if packet is None or packet.socket >= len(self._shared_list):
                self._drop("malformed reply from a worker")
                continue
            try:
                self._shared_list[packet.socket].sendto(packet.datagram, (packet.host, packet.port))
            except (OSError, ValueError) as error:  # ICMP errors, a full buffer: like UDP
                self._drop(f"reply send: {type(error).__name__}")
                continue
            self.counters.replies += 1

    def _relay(self, index: int, packet: bytes) -> None:
        """A stream packet between workers, in order behind what already waits for `index`."""
        if index >= len(self._inboxes):
            self._drop("stream packet for no worker")
            return
        self.counters.relayed += 1
        self._send(index, packet)

    def _drop(self, reason: str) -> None:
        self.counters.dropped += 1
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dispatcher dropped a datagram: %s", reason)

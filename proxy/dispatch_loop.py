"""The `--workers` dispatcher: a thread of the supervisor that serves the shared UDP port.

Each datagram goes to the worker `proxy.dispatcher.worker_for` names (by Call-ID), over that
worker's private Unix datagram socket, with the original source address in front. The worker
sends its replies to those requests back over the same socket, and the thread sends them from
the shared socket the request came in on (RFC 3581 section 4: a response leaves from the
address and port its request was received on). When a
worker's socket is full (the worker is busy, or dead and being restarted) datagrams wait in a
bounded per-worker backlog, in order; beyond it they are dropped and counted, as a full UDP
receive buffer would drop them.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque
from dataclasses import dataclass, field

from proxy.dispatcher import decode_packet, encode_header, worker_for

log = logging.getLogger("callerid_proxy.dispatcher")
MAX_DATAGRAM = 65535
BATCH = 64  # datagrams read from one socket per poll wake-up
BACKLOG_MAX = 4096  # datagrams waiting for one worker's socket
POLL_MS = 200  # how often the thread looks at its stop flag when idle


@dataclass
class DispatchCounters:
    """Written by the dispatcher thread only; read (racily, for metrics) by the supervisor."""

    dispatched: list[int]
    replies: int = 0
    dropped: int = 0
    backlog_peak: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, shared: list[socket.socket], inboxes: list[socket.socket]) -> None:
        self._shared = {sock.fileno(): sock for sock in shared}
        self._shared_list = shared
        self._shared_index = {sock.fileno(): index for index, sock in enumerate(shared)}
        self._inboxes = inboxes
        self._inbox_index = {sock.fileno(): index for index, sock in enumerate(inboxes)}
        self._backlog: list[deque[bytes]] = [deque() for _ in inboxes]
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
            try:
                packet = encode_header(host, port, socket_index) + data
            except ValueError:
                self._drop("unencodable source")
                continue
            self._send(worker_for(data, host, port, workers), packet)

    def _send(self, index: int, packet: bytes) -> None:
        backlog = self._backlog[index]
        if backlog:  # keep the order: nothing overtakes what already waits
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
        backlog.append(packet)
        self.counters.backlog_peak = max(self.counters.backlog_peak, len(backlog))

    def _flush(self, index: int) -> None:
        backlog, inbox = self._backlog[index], self._inboxes[index]
        while backlog:
            try:
                inbox.send(backlog[0])
            except BlockingIOError:
                return
            except OSError as error:
                self._drop(f"send: {error.strerror}")
            else:
                self.counters.dispatched[index] += 1
            backlog.popleft()
        self._poller.modify(inbox, select.POLLIN)

    def _replies(self, inbox: socket.socket) -> None:
        """Send what a worker answers to a dispatched request from the shared socket."""
        for _ in range(BATCH):
            try:
                packet = decode_packet(inbox.recv(MAX_DATAGRAM + 128))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._drop(f"reply recv: {error.strerror}")
                return
            if packet is None or packet.socket >= len(self._shared_list):
                self._drop("malformed reply from a worker")
                continue
            try:
                self._shared_list[packet.socket].sendto(packet.datagram, (packet.host, packet.port))
            except (OSError, ValueError) as error:  # ICMP errors, a full buffer: like UDP
                self._drop(f"reply send: {type(error).__name__}")
                continue
            self.counters.replies += 1

    def _drop(self, reason: str) -> None:
        self.counters.dropped += 1
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dispatcher dropped a datagram: %s", reason)

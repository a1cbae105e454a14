"""Accepting TCP connections without letting an outsider take every file descriptor.

The proxy accepts by hand (a reader on the listening socket, then `connect_accepted_socket`)
rather than with `loop.create_server`, for two reasons:

- the caps are checked on the bare socket, before any protocol or transport exists: a source
  over its cap costs one accept and one close;
- a failed accept (EMFILE/ENFILE: out of file descriptors) is ours to handle. uvloop closes the
  whole listening server on it (libuv reports the error to the listen callback), and asyncio
  logs a traceback; here it is counted, logged at most once per interval, and accepting pauses
  for a second while the backlog waits in the kernel.

Trusted peers (the PBX, the trunks, `--trusted` networks) are exempt from both caps: an attacker
can use up the untrusted allowance but never the PBX's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext

log = logging.getLogger("callerid_proxy.transport")

ACCEPT_RETRY_DELAY = 1.0  # seconds accepting pauses after running out of descriptors
ACCEPT_BATCH = 64  # accepts per readiness event, so one burst cannot hold the loop
LOG_INTERVAL = 10.0  # at most one "accept failed" line per interval
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class TcpLimits:
    max_connections: int = 512  # accepted connections from untrusted sources, in total
    max_per_source: int = 8  # accepted connections per untrusted IP address
    message_deadline: float = 5.0  # seconds from the first byte of a message to its last
    max_write_buffer: int = 1024 * 1024  # bytes queued toward a peer that does not read


class ConnectionBudget:
    """Counts live accepted connections per untrusted source; trusted ones are not counted."""

    def __init__(self, limits: TcpLimits, is_trusted: Callable[[str], bool]) -> None:
        self.limits = limits
        self._is_trusted = is_trusted
        self._per_source: Counter[str] = Counter()
        self.untrusted = 0

    def admit(self, host: str) -> str | None:
        """None and the connection is counted, or why it is refused."""
        if self._is_trusted(host):
            return None
        if self.untrusted >= self.limits.max_connections:
            return "tcp_refused_total_cap"
        if self._per_source[host] >= self.limits.max_per_source:
            return "tcp_refused_source_cap"
        self._per_source[host] += 1
        self.untrusted += 1
        return None

    def release(self, host: str) -> None:
        if self._per_source.get(host, 0) <= 0:
            return  # a trusted peer's, never counted
        self._per_source[host] -= 1
        self.untrusted -= 1
        if not self._per_source[host]:
            del self._per_source[host]


class Acceptor:
    """One listening TCP socket; accepted sockets go to `factory` through the loop."""

    def __init__(
        self,
        budget: ConnectionBudget | None,
        factory: Callable[[str], asyncio.BaseProtocol],
        counters: Counter[str],
        *,
        ssl: SSLContext | None = None,
    ) -> None:
        """`ssl`: a server context for a TLS listener (the same accept path, then TLS)."""
        self._ssl = ssl
        self._budget = budget
        self._factory = factory
        self._counters = counters
        self._sock: socket.socket | None = None
        self._loop = asyncio.get_running_loop()
        self._paused: asyncio.TimerHandle | None = None
        self._last_log = -LOG_INTERVAL
        self._tasks: set[asyncio.Task[object]] = set()

    def listen(self, host: str, port: int, backlog: int = 511) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.adopt(sock)

    def adopt(self, sock: socket.socket) -> None:
        """Accept on a socket that is already listening (the `--workers` supervisor's shared
        port, which every worker accepts from: a loser of the race sees BlockingIOError)."""
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(ACCEPT_BATCH):
            if sock is None:
                return
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                self._accept_failed(error)
                return
            self._accepted(conn, str(addr[0]))

    def _accepted(self, conn: socket.socket, host: str) -> None:
        refusal = self._budget.admit(host) if self._budget is not None else None
        if refusal is not None:
            self._counters[refusal] += 1
            _reset(conn)
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._attach(conn, host))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach(self, conn: socket.socket, host: str) -> None:
        try:
            await self._loop.connect_accepted_socket(
                lambda: self._factory(host), conn, ssl=self._ssl
            )
        except OSError as error:
            if self._budget is not None:
                self._budget.release(host)
            conn.close()
            self._accept_failed(error)

    def _accept_failed(self, error: OSError) -> None:
        """Out of descriptors (or a transient error): count it, log at most once per interval,
        and pause accepting for a moment; the pending connections wait in the backlog."""
        self._counters["tcp_accept_failed"] += 1
        now = self._loop.time()
        if now - self._last_log >= LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "tcp accept failed: %s; pausing accepts %gs (counted as tcp_accept_failed, "
                "logged at most every %gs)", error.strerror or error, ACCEPT_RETRY_DELAY,
                LOG_INTERVAL, extra={"summarize": False},
            )  # fmt: skip
        if error.errno in _OUT_OF_FILES and self._sock is not None and self._paused is None:
            self._loop.remove_reader(self._sock.fileno())
            self._paused = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)


def _reset(conn: socket.socket) -> None:
    """Close at once with RST (SO_LINGER 0): no TIME_WAIT kept for a refused connection."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the (before, after) soft limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as error:
            log.warning("cannot raise the open files limit from %d: %s", soft, error)
            return soft, soft
    log.info("open files limit: %d (soft, was %d; hard %s)", target, soft, hard)
    return soft, max(soft, target)

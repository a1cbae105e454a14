"""ICMP errors on the UDP sockets: which destination a "port/host unreachable" was about.

An unconnected UDP socket on Linux hears nothing of ICMP errors unless IP_RECVERR (IPV6_RECVERR)
is set (ip(7), ipv6(7)). With it set, each error is queued on the socket's error queue, read with
`recvmsg(..., MSG_ERRQUEUE)`: the message's address is the original destination of the datagram
that failed, and the ancillary data a `struct sock_extended_err` saying why. That is how the proxy
learns at once that a UDP trunk is unreachable (RFC 3261 8.1.3.1, 16.7 step 4: a transport error
is treated as a 503 and the next target is tried) instead of waiting for its no-answer timeout.

A pending error also makes the socket's next `sendto` fail (the datagram is not sent), whatever
its destination: the endpoint reads the queue and sends again (proxy/transport.py).
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from dataclasses import dataclass

# Linux values (<linux/in.h>, <linux/in6.h>, <linux/errqueue.h>); Python 3.11 lacks the names.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
# struct sock_extended_err: ee_errno u32, ee_origin/type/code/pad u8, ee_info u32, ee_data u32.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
# Errors that say nobody will answer at that address (not e.g. EMSGSIZE, "fragmentation needed").
UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
)
MAX_ERRORS_PER_READ = 64  # one wakeup drains at most this many queued errors
_ANCILLARY_BYTES = 512


@dataclass(frozen=True)
class UdpError:
    """One queued ICMP error: the destination it was about and the errno it maps to."""

    host: str
    port: int
    errno: int

    @property
    def unreachable(self) -> bool:
        return self.errno in UNREACHABLE_ERRNOS


def enable_error_queue(sock: socket.socket) -> bool:
    """Ask the kernel to report ICMP errors on `sock` (Linux only); whether it could."""
    if not sys.platform.startswith("linux"):
        return False
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_RECVERR)
        if sock.family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_RECVERR)
    )
    try:
        sock.setsockopt(level, option, 1)
    except OSError:
        return False
    return True


def parse_error(
    address: object, ancillary: list[tuple[int, int, bytes]]
) -> UdpError | None:
    """The error one `recvmsg(MSG_ERRQUEUE)` returned, or None if it is not an ICMP error
    about an IP destination (e.g. a local error, or no extended error attached)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    for level, kind, data in ancillary:
        if (level, kind) not in (
            (socket.IPPROTO_IP, IP_RECVERR),
            (socket.IPPROTO_IPV6, IPV6_RECVERR),
        ):
            continue
        if len(data) < _EXTENDED_ERR.size:
            return None
        code, origin, *_ = _EXTENDED_ERR.unpack_from(data)
        if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
            return None
        return UdpError(str(address[0]), int(address[1]), code)
    return None


def read_errors(sock: socket.socket) -> list[UdpError]:
    """Drain (bounded) the error queue of a non-blocking socket; draining also clears the
    pending error that would fail the next send."""
    found: list[UdpError] = []
    for _ in range(MAX_ERRORS_PER_READ):
        try:
            _, ancillary, _, address = sock.recvmsg(1, _ANCILLARY_BYTES, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # no queue on this platform, or the socket is closed
            break
        error = parse_error(address, ancillary)
        if error is not None:
            found.append(error)
    return found


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to host:port (an IP literal) with its error queue on."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    enable_error_queue(sock)
    return sock

"""ICMP errors on the UDP sockets (proxy/udp_errors.py, UdpEndpoint): the error-queue entry is
parsed into the destination it was about, and a send that met an earlier datagram's pending
error is sent again."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import sys
import time
from collections.abc import Callable

import pytest

from proxy.sip.addresses import Source, Target
from proxy.sip.framing import Frame
from proxy.transport import TcpConnection, UdpEndpoint
from proxy.udp_errors import (
    IP_RECVERR,
    IPV6_RECVERR,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    UdpError,
    bind_udp,
    enable_error_queue,
    parse_error,
    read_errors,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR")
HOST = "127.0.0.1"


def extended_err(code: int, origin: int, icmp_type: int = 3, icmp_code: int = 3) -> bytes:
    """A struct sock_extended_err followed by the offender's sockaddr_in (127.0.0.1)."""
    offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(HOST))
    return struct.pack("=IBBBBII", code, origin, icmp_type, icmp_code, 0, 0, 0) + offender


V4 = (socket.IPPROTO_IP, IP_RECVERR)
V6 = (socket.IPPROTO_IPV6, IPV6_RECVERR)


@pytest.mark.parametrize(
    ("address", "cmsg", "expected"),
    [
        (("127.0.0.9", 5060), (*V4, extended_err(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP)),
         UdpError("127.0.0.9", 5060, errno.ECONNREFUSED)),
        (("::1", 5070, 0, 0), (*V6, extended_err(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP6, 1, 4)),
         UdpError("::1", 5070, errno.ECONNREFUSED)),
        (("10.0.0.1", 5060), (*V4, extended_err(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 3, 1)),
         UdpError("10.0.0.1", 5060, errno.EHOSTUNREACH)),
        (("10.0.0.1", 5060), (*V4, extended_err(errno.EMSGSIZE, SO_EE_ORIGIN_ICMP, 3, 4)),
         UdpError("10.0.0.1", 5060, errno.EMSGSIZE)),
        # A local error (SO_EE_ORIGIN_LOCAL), not an ICMP answer from the network: ignored.
        (("10.0.0.1", 5060), (*V4, extended_err(errno.EMSGSIZE, 1)), None),
        (("10.0.0.1", 5060), (*V4, b"\x6f\x00"), None),  # truncated
        (("10.0.0.1", 5060), (socket.SOL_SOCKET, 1, extended_err(111, 2)), None),  # other cmsg
        (None, (*V4, extended_err(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP)), None),  # no address
    ],
    ids=["v4-port", "v6-port", "host", "frag-needed", "local", "short", "other-cmsg", "no-addr"],
)  # fmt: skip
def test_an_error_queue_entry_names_its_destination_and_errno(
    address: object, cmsg: tuple[int, int, bytes], expected: UdpError | None
) -> None:
    assert parse_error(address, [cmsg]) == expected


@pytest.mark.parametrize(
    ("code", "unreachable"),
    [(errno.ECONNREFUSED, True), (errno.EHOSTUNREACH, True), (errno.ENETUNREACH, True),
     (errno.EHOSTDOWN, True), (errno.EMSGSIZE, False), (errno.EPROTO, False)],
)  # fmt: skip
def test_only_unreachable_errors_count(code: int, unreachable: bool) -> None:
    assert UdpError(HOST, 1, code).unreachable is unreachable


def closed_udp_port(host: str = HOST) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def poll(read: Callable[[], list[UdpError]], timeout_s: float = 2.0) -> list[UdpError]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = read()
        if found:
            return found
        time.sleep(0.01)
    return []


@linux_only
@pytest.mark.parametrize("host", [HOST, "::1"])
def test_a_real_port_unreachable_is_read_from_the_queue_and_clears_the_pending_error(
    host: str,
) -> None:
    port = closed_udp_port(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with bind_udp(host, 0) as sock, socket.socket(family, socket.SOCK_DGRAM) as sink:
        sink.bind((host, 0))
        sink.settimeout(2)
        sock.sendto(b"x", (host, port))
        assert poll(lambda: read_errors(sock)) == [UdpError(host, port, errno.ECONNREFUSED)]
        assert read_errors(sock) == []
        sock.sendto(b"after", sink.getsockname()[:2])  # ECONNREFUSED if still pending
        assert sink.recv(100) == b"after"


@linux_only
def test_without_the_option_the_socket_hears_nothing() -> None:
    port = closed_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind((HOST, 0))
        sock.sendto(b"x", (HOST, port))
        time.sleep(0.05)
        assert read_errors(sock) == []
        assert enable_error_queue(sock)


class Sink:
    def __init__(self) -> None:
        self.unreachable: list[Target] = []

    def on_message(self, data: bytes, source: Source) -> None:
        raise AssertionError(f"unexpected datagram {data!r} from {source}")

    def on_broken_stream(self, frame: Frame, source: Source) -> None:
        raise AssertionError("no streams here")

    def on_connection_made(self, connection: TcpConnection) -> None:
        raise AssertionError("no streams here")

    def on_connection_closed(self, connection: TcpConnection) -> None:
        raise AssertionError("no streams here")

    def on_unreachable(self, target: Target) -> None:
        self.unreachable.append(target)


@linux_only
async def test_the_endpoint_reports_the_target_and_resends_what_the_pending_error_failed() -> None:
    """The ICMP for the first datagram arrives while it is being sent (loopback): the next
    `sendto`, to a live peer, fails on that pending error; the endpoint reads the queue,
    tells the sink which target was unreachable and sends the datagram again."""
    loop = asyncio.get_running_loop()
    port = closed_udp_port()
    sink = Sink()
    sock = bind_udp(HOST, 0)
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(sink, sock), sock=sock
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((HOST, 0))
        peer.settimeout(2)
        try:
            endpoint.send(b"to nobody", Target("udp", HOST, port))
            endpoint.send(b"to the peer", Target("udp", HOST, peer.getsockname()[1]))
            for _ in range(100):
                if sink.unreachable:
                    break
                await asyncio.sleep(0.01)
            assert peer.recv(100) == b"to the peer"
        finally:
            transport.close()
    assert sink.unreachable == [Target("udp", HOST, port)]

"""Letting workers send from the shared UDP port without ever receiving on it (Linux).

A reply to a request that came in on the shared port must leave from it (RFC 3581 section 4).
Routing every reply back through the supervisor costs it a receive and a send per reply, so
where the kernel allows it the supervisor's shared socket joins a SO_REUSEPORT group with a
classic BPF program that always picks socket 0 (its own: the first one bound, and it stays
open while workers come and go), and each worker binds a socket of its own to the same
address, in the same group, only to send from it. If anything ever does arrive on a worker's
socket it is served like a dispatched datagram, so the steering is an optimisation, never a
correctness condition; where the program cannot be attached, replies go through the
supervisor instead.
"""

from __future__ import annotations

import ctypes
import logging
import socket

log = logging.getLogger("callerid_proxy.reply_port")
SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)  # asm-generic/socket.h
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_steered(host: str, port: int, *, steer: bool = True) -> tuple[socket.socket, bool]:
    """The supervisor's shared UDP socket; True when it steers every datagram to itself so
    that workers may send from the same address. OSError when the address is taken."""
    if not steer:
        return _bind_plain(host, port), False
    # A plain bind first: SO_REUSEPORT must not let us join another process's group silently.
    _bind_plain(host, port).close()
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, 0))
        fprog = _SockFprog(1, ctypes.cast(program, ctypes.POINTER(_SockFilter)))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                        ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog)))
    except (OSError, AttributeError) as error:
        log.info("replies from the shared port go through the supervisor (%s)", error)
        sock.close()
        return _bind_plain(host, port), False
    sock.bind((host, port))
    return sock, True


def _bind_plain(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_sender(host: str, port: int) -> socket.socket:
    """A worker's socket on the shared address, in the supervisor's group (send only)."""
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock

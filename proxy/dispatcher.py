"""Which worker a datagram on the shared port belongs to, and how it travels to that worker.

Pure functions, no I/O: the `--workers` supervisor (proxy/workers.py) calls them for every
datagram that arrives on the shared `--listen` UDP port.

A call stays on one worker because every message of a call carries the same Call-ID
(RFC 3261 8.1.1.4: retransmissions, CANCEL, ACK and in-dialog requests repeat it), so the worker
is `crc32(Call-ID) mod N`. The scan for the header is bounded; a datagram without a Call-ID in
its first bytes (garbage, or an enormous header block) falls back to a hash of its source
address, so that the same source at least keeps reaching the same worker.

The datagram reaches its worker over a private Unix socket with a small header in front that
carries the original source address: the worker judges trust on that address, never on the
socket it read from. Replies to it come back the same way, so that they leave from the shared
port the request was received on (RFC 3581 section 4).

TCP (and TLS) on the shared port: the worker that accepted a connection frames its messages and
sends each one whose Call-ID belongs to another worker to that worker, through the supervisor
(a `StreamHop` in the header: which worker holds the connection, its id there, the worker it
goes to); what the owner answers on that connection travels back the same way and leaves on it.
So one PBX connection carrying every call spreads its calls like the UDP port does, while the
connection itself (its framing, limits and deadlines, proxy/transport.py) stays with one worker.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import zlib
from typing import NamedTuple

SCAN_LIMIT = 4096  # bytes of a datagram searched for the Call-ID header
# A header line starting with the full or the compact name (RFC 3261 7.3.3, 20.8), any case,
# optional whitespace around the colon (RFC 3261 7.3.1); the value runs to the end of the line.
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)

# Version, flags, port, index of the shared socket, the worker a stream packet goes to, the
# worker holding its connection, length of the host; the connection's id there; then the host as
# the socket reported it (text, so that an IPv4-mapped or scoped IPv6 address reaches the worker
# exactly as it would have reached a single process); then the datagram. The same header goes
# every way: supervisor -> worker it names the source, worker -> supervisor the target of a
# reply; a stream packet names the message's source (a relayed message) or the target of the
# answer (a reply toward the connection).
_HEADER = struct.Struct("!BBHBBBBQ")
_VERSION = 3
_SHED = 0x01  # supervisor -> worker: a new INVITE to answer 503 at once (the dispatcher's queue)
_STREAM = 0x02  # a message read from a worker's TCP/TLS connection, for the worker it goes to
_STREAM_REPLY = 0x04  # for a worker's TCP/TLS connection: to be sent on it
_CLOSE = 0x08  # (with _STREAM_REPLY) the connection is closed after it
_TLS = 0x10  # (with a stream flag) the connection is TLS, not TCP
_FLAGS = _SHED | _STREAM | _STREAM_REPLY | _CLOSE | _TLS
MAX_HOST = 64
MAX_CONNECTION = 2**64 - 1


class StreamHop(NamedTuple):
    """A stream message on its way between workers: `holder` has the connection `connection`
    (its transport "tcp" or "tls"); `to` is the worker the packet goes to: the one the message's
    Call-ID names, or, for a reply (`reply`), the holder itself."""

    to: int
    holder: int
    connection: int
    transport: str = "tcp"
    reply: bool = False
    close_after: bool = False


class Packet(NamedTuple):
    host: str
    port: int
    socket: int  # which shared socket (one per --listen address) it came in on / goes out of
    datagram: bytes
    shed: bool = False  # the dispatcher asks for this new INVITE to be shed (see dispatch_loop)
    stream: StreamHop | None = None  # a stream message or reply between workers


def call_id_of(datagram: bytes, limit: int = SCAN_LIMIT) -> bytes | None:
    """The Call-ID value (surrounding whitespace removed) of the first Call-ID header line that
    starts within the first `limit` bytes; None when there is none or it is empty."""
    match = _CALL_ID.search(datagram, 0, limit)
    if match is None:
        return None
    value = match.group(1).strip()
    return value or None


def worker_for(datagram: bytes, host: str, port: int, workers: int) -> int:
    """The index (0 <= index < workers) of the worker that owns this datagram."""
    if workers <= 1:
        return 0
    key = call_id_of(datagram)
    if key is None:
        key = f"{host}|{port}".encode()
    return zlib.crc32(key) % workers


def encode_header(
    host: str, port: int, socket_index: int = 0, *, shed: bool = False,
    stream: StreamHop | None = None,
) -> bytes:
    """The header put in front of a dispatched datagram, a reply or a stream packet. Raises
    ValueError when `host` is not an IP literal (an IPv6 one may carry a %scope) or a number is
    out of range. `shed`: a new INVITE the worker is to answer 503 now (its own checks still
    apply)."""
    ipaddress.ip_address(host.split("%", 1)[0])
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    if not 0 <= socket_index <= 0xFF:
        raise ValueError(f"socket index out of range: {socket_index}")
    raw = host.encode("ascii")
    if len(raw) > MAX_HOST:
        raise ValueError(f"host too long: {host!r}")
    flags = _SHED if shed else 0
    to = holder = connection = 0
    if stream is not None:
        if not (0 <= stream.to <= 0xFF and 0 <= stream.holder <= 0xFF):
            raise ValueError(f"worker index out of range: {stream}")
        if not 0 <= stream.connection <= MAX_CONNECTION or stream.transport not in ("tcp", "tls"):
            raise ValueError(f"not a stream connection: {stream}")
        to, holder, connection = stream.to, stream.holder, stream.connection
        flags |= _STREAM_REPLY if stream.reply else _STREAM
        flags |= (_CLOSE if stream.close_after else 0) | (_TLS if stream.transport == "tls" else 0)
    return _HEADER.pack(
        _VERSION, flags, port, socket_index, to, holder, len(raw), connection
    ) + raw


def decode_packet(data: bytes) -> Packet | None:
    """What `encode_header(...) + datagram` built; None for anything else (packets only come
    from our own processes, but are checked anyway)."""
    if len(data) < _HEADER.size:
        return None
    version, flags, port, socket_index, to, holder, length, connection = _HEADER.unpack_from(data)
    end = _HEADER.size + length
    if version != _VERSION or flags & ~_FLAGS or not 0 < length <= MAX_HOST or len(data) < end:
        return None
    stream = _stream_hop(flags, to, holder, connection)
    if stream is None and (flags & ~_SHED or to or holder or connection):
        return None  # stream fields without a stream kind, or both kinds
    try:
        host = data[_HEADER.size : end].decode("ascii")
    except UnicodeDecodeError:
        return None
    return Packet(host, port, socket_index, data[end:], bool(flags & _SHED), stream)


def _stream_hop(flags: int, to: int, holder: int, connection: int) -> StreamHop | None:
    kind = flags & (_STREAM | _STREAM_REPLY)
    if kind not in (_STREAM, _STREAM_REPLY) or flags & _SHED:
        return None
    if flags & _CLOSE and kind == _STREAM:
        return None  # only an answer closes the connection after it
    transport = "tls" if flags & _TLS else "tcp"
    return StreamHop(to, holder, connection, transport, kind == _STREAM_REPLY,
                     bool(flags & _CLOSE))  # fmt: skip

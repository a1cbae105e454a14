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

# Version, flags, port, index of the shared socket, length of the host; then the host as the
# socket reported it (text, so that an IPv4-mapped or scoped IPv6 address reaches the worker
# exactly as it would have reached a single process); then the datagram. The same header goes
# both ways: supervisor -> worker it names the source, worker -> supervisor the target of a reply.
_HEADER = struct.Struct("!BBHBB")
_VERSION = 2
_SHED = 0x01  # supervisor -> worker: a new INVITE to answer 503 at once (the dispatcher's queue)
MAX_HOST = 64


class Packet(NamedTuple):
    host: str
    port: int
    socket: int  # which shared socket (one per --listen address) it came in on / goes out of
    datagram: bytes
    shed: bool = False  # the dispatcher asks for this new INVITE to be shed (see dispatch_loop)


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


def encode_header(host: str, port: int, socket_index: int = 0, *, shed: bool = False) -> bytes:
    """The header put in front of a dispatched datagram or a reply. Raises ValueError when
    `host` is not an IP literal (an IPv6 one may carry a %scope) or a number is out of range.
    `shed`: a new INVITE the worker is to answer 503 now (its own checks still apply)."""
    ipaddress.ip_address(host.split("%", 1)[0])
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    if not 0 <= socket_index <= 0xFF:
        raise ValueError(f"socket index out of range: {socket_index}")
    raw = host.encode("ascii")
    if len(raw) > MAX_HOST:
        raise ValueError(f"host too long: {host!r}")
    return _HEADER.pack(_VERSION, _SHED if shed else 0, port, socket_index, len(raw)) + raw


def decode_packet(data: bytes) -> Packet | None:
    """What `encode_header(...) + datagram` built; None for anything else (packets only come
    from our own processes, but are checked anyway)."""
    if len(data) < _HEADER.size:
        return None
    version, flags, port, socket_index, length = _HEADER.unpack_from(data)
    end = _HEADER.size + length
    if version != _VERSION or flags & ~_SHED or not 0 < length <= MAX_HOST or len(data) < end:
        return None
    try:
        host = data[_HEADER.size : end].decode("ascii")
    except UnicodeDecodeError:
        return None
    return Packet(host, port, socket_index, data[end:], bool(flags & _SHED))

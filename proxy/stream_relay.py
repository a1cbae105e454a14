"""`--workers` over TCP and TLS: a connection's calls spread over the workers like datagrams.

A connection to the shared port is accepted by one worker (the supervisor's listening socket is
shared), and a PBX sends every call over one connection, so until now one worker carried all
of them. Now the worker holding the connection (the holder) frames its messages as before, with
its limits and deadlines (proxy/transport.py), and sends each one whose Call-ID names another
worker (`proxy.dispatcher.worker_for`, the UDP dispatcher's choice) to that worker, the owner,
through the supervisor. The owner handles it as if read from the connection: its source is the
peer's address and a connection id of its own (`remote_stream`) that stands for the holder's
connection. What the owner answers on that connection (RFC 3261 18.2.2: a response goes back
over the connection its request came in on) goes back to the holder, which sends it on the
connection, or, once that connection is gone, as it would send any answer whose connection is
gone (to the same address, a new connection if need be). The messages of one call take one
path in both directions, in order (a Unix datagram socket each way keeps order, and so does the
dispatcher's backlog), so a CANCEL or ACK never overtakes its INVITE.

Kept with the holder: what an outsider sends (it is refused there and the connection closed,
as always), what cannot be relayed (the supervisor's socket full: handled here rather than
lost, since no one retransmits over TCP), and everything on connections not from the shared
port (the worker's own port, where responses and in-dialog requests to its Via and
Record-Route come).
"""

from __future__ import annotations

from collections import Counter

from proxy.dispatcher import StreamHop, encode_header, worker_for
from proxy.sip.addresses import Outgoing, Source

# Source.connection of a message relayed from another worker's connection: far above the ids a
# worker gives its own connections (counted from 1) and unlike the negative ids of the shared
# UDP sockets (proxy/worker_process.py `shared_connection`).
REMOTE_STREAMS = 1 << 48
_CONNECTION_BITS = 40  # a worker's own connection ids that can be relayed: under 2**40
_HOLDER_LIMIT = 1 << (48 - _CONNECTION_BITS)


def remote_stream(holder: int, connection: int) -> int | None:
    """The id an owner uses for `holder`'s connection `connection`; None when out of range."""
    if not (0 <= holder < _HOLDER_LIMIT and 0 < connection < 1 << _CONNECTION_BITS):
        return None
    return REMOTE_STREAMS + (holder << _CONNECTION_BITS) + connection


def holder_of(connection: int | None) -> tuple[int, int] | None:
    """(holder, its connection id) for an id `remote_stream` made; None for any other id."""
    if connection is None or connection < REMOTE_STREAMS:
        return None
    offset = connection - REMOTE_STREAMS
    holder, own = offset >> _CONNECTION_BITS, offset & ((1 << _CONNECTION_BITS) - 1)
    return (holder, own) if holder < _HOLDER_LIMIT and own else None


class StreamRelay:
    """One worker's side of it: which of its connections came from the shared port, the packets
    it sends through the supervisor (`send`, its inbox socket), and what it counted."""

    def __init__(self, index: int, workers: int) -> None:
        self.index = index
        self.workers = workers
        self.shared: set[int] = set()  # ids of our connections accepted on the shared port
        self.counters: Counter[str] = Counter()

    def owner(self, data: bytes, source: Source) -> int:
        """The worker whose message this is: the one its Call-ID names."""
        return worker_for(data, source.host, source.port, self.workers)

    def message_packet(self, owner: int, data: bytes, source: Source) -> bytes | None:
        """The packet taking a message read from our connection to `owner`; None when it
        cannot be relayed (an id out of range, an address no packet can carry)."""
        connection = source.connection
        if connection is None or remote_stream(self.index, connection) is None:
            return None
        hop = StreamHop(owner, self.index, connection, source.transport)
        try:
            return encode_header(source.host, source.port, stream=hop) + data
        except ValueError:
            return None

    def reply_packet(self, outgoing: Outgoing) -> bytes | None:
        """The packet taking an answer on a relayed connection back to its holder."""
        held = holder_of(outgoing.connection)
        if held is None:
            return None
        target = outgoing.target
        hop = StreamHop(held[0], held[0], held[1], target.transport, True, outgoing.close_after)
        try:
            return encode_header(target.host, target.port, stream=hop) + outgoing.data
        except ValueError:
            return None

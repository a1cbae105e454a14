"""Reading ahead under overload: datagrams taken off the kernel's queue as they arrive, worked
off in order, in short batches (proxy/server.py `ProxyServer.on_message`).

Without it, the queue in front of an overloaded process is the socket's receive buffer, read
first in, first out: a new INVITE that is going to be refused still waits behind everything that
arrived before it, so its 503 comes as late as the queue is long (150 ms and more at twice the
capacity; issue 6 asks for 50 ms). Reading ahead, the server sees every datagram the moment the
loop can read it: a new INVITE it sheds gets its 503 from a glance at once (about 35 us), and only
the traffic it keeps (responses, in-dialog requests, CANCEL, ACK, the INVITEs it admits) waits
here, in arrival order. The age of the oldest message waiting is the queueing delay itself,
which the overload detector steers (proxy/overload.py).

A shed INVITE waits its turn too once the oldest message has waited `RETRANSMIT_GUARD`: T1
(500 ms, RFC 3261 17.1.1.2) after sending an INVITE the PBX retransmits it, and a retransmission
of one still waiting here must reach the transaction its original creates, not a 503 of its own.

The server reads ahead while it sheds, and whenever the kernel's queue has started to build
(`SO_MEMINFO`, proxy/transport.py): so when the overload is detected, what has piled up is
already here, where it was admitted, and the INVITEs after it are refused the moment they come.

Only UDP reads ahead: a TCP connection's messages stay in the kernel's stream buffer, where TCP's
own flow control bounds them (a message dropped here would be lost for good: RFC 3261 17.1.1.2,
no retransmission over a reliable transport). What waits is bounded in bytes like the socket
buffer it replaces (`UDP_BUFFER_BYTES`); past that a datagram is dropped and counted, as the kernel
would, and the peer's retransmission (RFC 3261 17.1.1.2, 17.1.2.2) brings it again.

Three parallel deques, not one of tuples: no object is made per message beyond what the
transport already made (the bytes and the Source), and nothing here is tracked by the cyclic GC.
No I/O and no clock: the server passes `now`.
"""

from __future__ import annotations

from collections import deque

from proxy.sip.addresses import Source

DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # the UDP receive buffer the proxy asks for (server.py)
# s: a shed INVITE is answered at once only while nothing older has waited this long. The PBX
# retransmits an INVITE T1 (0.5 s) after sending it; for the retransmission to find its original
# still waiting here, that original must have waited T1 less its time in the kernel's queue, which
# reading ahead keeps to milliseconds (a few ms of datagrams when it starts): 0.1 s of margin.
RETRANSMIT_GUARD = 0.4


class ReadAheadQueue:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.dropped = 0  # datagrams refused because the bytes waiting reached `max_bytes`
        self._data: deque[bytes] = deque()
        self._sources: deque[Source] = deque()
        self._arrivals: deque[float] = deque()
        self._sheds: deque[bool] = deque()  # a new INVITE already judged to be shed
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes_waiting(self) -> int:
        return self._bytes

    def put(self, data: bytes, source: Source, now: float, shed: bool = False) -> bool:
        """Queue one datagram (`shed`: a new INVITE to be answered 503 in its turn); False, and
        counted, when the bytes waiting would pass the bound."""
        if self._bytes + len(data) > self.max_bytes:
            self.dropped += 1
            return False
        self._data.append(data)
        self._sources.append(source)
        self._arrivals.append(now)
        self._sheds.append(shed)
        self._bytes += len(data)
        return True

    def take(self) -> tuple[bytes, Source, bool]:
        """The oldest message waiting, and whether it is to be shed (check `len` first)."""
        data = self._data.popleft()
        self._arrivals.popleft()
        self._bytes -= len(data)
        return data, self._sources.popleft(), self._sheds.popleft()

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest message has waited (0 when nothing waits): the queueing delay."""
        return now - self._arrivals[0] if self._arrivals else 0.0

"""Reading ahead under overload: datagrams taken off the kernel's queue as they arrive, worked
off in short batches, responses first (proxy/server.py `ProxyServer.on_message`).

Without it, the queue in front of an overloaded process is the socket's receive buffer, read
first in, first out: a new INVITE that is going to be refused still waits behind everything that
arrived before it, so its 503 comes as late as the queue is long (150 ms and more at twice the
capacity; issue 6 asks for 50 ms). Reading ahead, the server sees every datagram the moment the
loop can read it: a new INVITE it sheds gets its 503 from a glance at once (about 35 us), and only
the traffic it keeps (responses, in-dialog requests, CANCEL, ACK, the INVITEs it admits) waits
here: responses first, the requests in arrival order (below). The age of the oldest message
waiting is the queueing delay itself, which the overload detector steers (proxy/overload.py).

Once the oldest message has waited `RETRANSMIT_GUARD`, a retransmission may come of an INVITE
still waiting here: T1 (500 ms, RFC 3261 17.1.1.2) after sending an INVITE the PBX retransmits
it, and that copy must reach the transaction its original creates, not a 503 of its own. So
the queue knows the INVITEs it holds that were admitted (their server-transaction key, from the
same glance the shed path reads, `shed_glance`), and past the guard only a new INVITE that may
be the copy of one of them waits its turn; any other is still answered at once. (Before, every
shed INVITE waited past the guard: far over capacity, with the ACKs of the 503s queued, the
queue stayed over the guard and the 503s came hundreds of ms late, their INVITEs retransmitted.)
A copy is byte for byte its original, so one the glance cannot read can only be the copy of an
admitted INVITE the glance could not read either: those are counted, and while one waits, every
unreadable shed INVITE waits too.

The server reads ahead while it sheds, and whenever the kernel's queue has started to build
(`SO_MEMINFO`, proxy/transport.py): so when the overload is detected, what has piled up is
already here, where it was admitted, and the INVITEs after it are refused the moment they come.

Only UDP reads ahead: a TCP connection's messages stay in the kernel's stream buffer, where TCP's
own flow control bounds them (a message dropped here would be lost for good: RFC 3261 17.1.1.2,
no retransmission over a reliable transport). What waits is bounded in bytes like the socket
buffer it replaces (`UDP_BUFFER_BYTES`); past that a datagram is dropped and counted, as the kernel
would, and the peer's retransmission (RFC 3261 17.1.1.2, 17.1.2.2) brings it again.

Responses go first. They wait in a lane of their own, worked off before the requests,
in arrival order among themselves: a response completes work already admitted, costs little (a
trunk's 100 Trying is absorbed at a glance), and is what stops the timers of the transactions
it answers. Behind a queue longer than T1, a trunk's 100 or 200 waiting in line let our Timer A
retransmit the INVITE (RFC 3261 17.1.1.2) and the PBX retransmit its own, and a UAS that gets
the INVITE again after its 200 may end the call. Taking a response before requests that came
earlier reorders nothing that depends on it: a response answers a request the proxy has already
forwarded (so never one still waiting here), and what a peer sends after a response (an ACK,
a BYE) still comes after it. Between different transactions, UDP promises no order anyway.

Parallel deques, not one of tuples: no object is made per message beyond what the
transport already made (the bytes and the Source), and nothing here is tracked by the cyclic GC.
No I/O and no clock: the server passes `now`.
"""

from __future__ import annotations

from collections import deque

from proxy.sip.addresses import Source
from proxy.sip.untrusted import shed_glance

ServerKey = tuple[str, str, str]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # the UDP receive buffer the proxy asks for (server.py)
# s: a shed INVITE is answered at once only while nothing older has waited this long. The PBX
# retransmits an INVITE T1 (0.5 s) after sending it; for the retransmission to find its original
# still waiting here, that original must have waited T1 less its time in the kernel's queue, which
# reading ahead keeps to milliseconds (a few ms of datagrams when it starts): 0.1 s of margin.
RETRANSMIT_GUARD = 0.4


def _admitted_invite(data: bytes, shed: bool) -> bool:
    """What `put` tracks and `take` releases, by one test so the two never disagree."""
    return not shed and data.startswith(b"INVITE ")


class ReadAheadQueue:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.dropped = 0  # datagrams refused because the bytes waiting reached `max_bytes`
        self._data: deque[bytes] = deque()
        self._sources: deque[Source] = deque()
        self._arrivals: deque[float] = deque()
        self._sheds: deque[bool] = deque()  # a new INVITE already judged to be shed
        # The responses' lane, taken first (see above); never shed.
        self._response_data: deque[bytes] = deque()
        self._response_sources: deque[Source] = deque()
        self._response_arrivals: deque[float] = deque()
        self._bytes = 0
        # The admitted INVITEs waiting: their keys in order (None: unreadable at a glance), and
        # how many of each key, and of unreadable ones, wait.
        self._admitted_order: deque[ServerKey | None] = deque()
        self._admitted: dict[ServerKey, int] = {}
        self._unreadable = 0

    def __len__(self) -> int:
        return len(self._data) + len(self._response_data)

    @property
    def bytes_waiting(self) -> int:
        return self._bytes

    def put(self, data: bytes, source: Source, now: float, shed: bool = False) -> bool:
        """Queue one datagram (`shed`: a new INVITE to be answered 503 in its turn); False, and
        counted, when the bytes waiting would pass the bound."""
        if self._bytes + len(data) > self.max_bytes:
            self.dropped += 1
            return False
        self._bytes += len(data)
        if data.startswith(b"SIP/"):  # a status line (a request line starts with a token)
            self._response_data.append(data)
            self._response_sources.append(source)
            self._response_arrivals.append(now)
            return True
        self._data.append(data)
        self._sources.append(source)
        self._arrivals.append(now)
        self._sheds.append(shed)
        if _admitted_invite(data, shed):
            self._admit(data)
        return True

    def _admit(self, data: bytes) -> None:
        seen = shed_glance(data)
        key = None if seen is None else seen.key
        self._admitted_order.append(key)
        if key is None:
            self._unreadable += 1
        else:
            self._admitted[key] = self._admitted.get(key, 0) + 1

    def _release(self) -> None:
        key = self._admitted_order.popleft()
        if key is None:
            self._unreadable -= 1
            return
        left = self._admitted[key] - 1
        if left:
            self._admitted[key] = left
        else:
            del self._admitted[key]

    def may_hold_original_of(self, invite: bytes) -> bool:
        """Whether `invite` may be the retransmission of an admitted INVITE waiting here (see
        above); False at once when none waits."""
        if not self._admitted and not self._unreadable:
            return False
        seen = shed_glance(invite)
        if seen is None:
            return self._unreadable > 0
        return seen.key in self._admitted

    def take(self) -> tuple[bytes, Source, bool]:
        """The oldest response waiting, else the oldest request, and whether it is to be
        shed (check `len` first)."""
        if self._response_data:
            data = self._response_data.popleft()
            self._response_arrivals.popleft()
            self._bytes -= len(data)
            return data, self._response_sources.popleft(), False
        data = self._data.popleft()
        self._arrivals.popleft()
        self._bytes -= len(data)
        shed = self._sheds.popleft()
        if _admitted_invite(data, shed):
            self._release()
        return data, self._sources.popleft(), shed

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest message has waited (0 when nothing waits): the queueing delay."""
        oldest = now
        if self._arrivals:
            oldest = self._arrivals[0]
        if self._response_arrivals:
            oldest = min(oldest, self._response_arrivals[0])
        return now - oldest

"""The transaction layer (Kamailio's tm): server and client transactions, their state machines
and RFC 3261 timers. It decides *when* something is sent or absorbed and owns what it sends
(`take_outgoing`) and what happened (`take_events`). It never calls back into the core: where
the core must act (build the request for the next trunk, relay a 2xx statelessly) it returns
an action.

A transaction that has sent or received its final answer only waits for its timers (17.1.1.2
Timer D, 17.1.2.2 Timer K, 17.2.1 Timers G/H/I, 17.2.2 Timer J, RFC 6026 Timer L): ~32 s, so at
1,000 calls/s some 30,000 finished calls. It is then *retired*: its object is dropped and what a
retransmission needs (the last response, where it goes, our ACK's bytes) is kept as a tuple of
atoms (`ServerRecord`, `ClientRecord`), which the cyclic garbage collector stops tracking. The
timers are keyed by atoms too. So a finished call costs the collector nothing (issue 6: no
collection over 5 ms) and little memory (issue 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.caller_id import replace_identity_header
from proxy.sip.counters import Counts
from proxy.sip.edits import apply_edits, remove_via_value
from proxy.sip.events import (
    Answered,
    Dropped,
    Event,
    FailedOver,
    Forwarded,
    ResponseRelayed,
    TimedOut,
)
from proxy.sip.message import split_message
from proxy.sip.parse import Message
from proxy.sip.responses import ResponseBase, build_response
from proxy.sip.timers import (
    T1,
    T2,
    T4,
    TIMER_B,
    TIMER_C,
    TIMER_D,
    TIMER_F,
    TIMER_H,
    TIMER_J,
    TIMER_L,
    Table,
    Timer,
    TimerQueue,
)
from proxy.sip.transactions import (
    INVITE_SERVER,
    ClientKey,
    ClientTransaction,
    Input,
    Restore,
    ServerKey,
    ServerTransaction,
    State,
    next_state,
    response_input,
    server_key,
)

SERVER_TIMERS: Final = (Timer.G, Timer.H, Timer.I, Timer.J, Timer.L)
DEFAULT_FAILOVER_STATUSES: Final = frozenset((408, 500, 502, 503, 504))

# The timer queue holds letters (str), not Timer members: an entry of atoms only is untracked by
# the garbage collector, one holding an Enum member never is.
_TIMER_OF: Final = {timer.value: timer for timer in Timer}
# Timer -> letter by a dict look-up: Enum.value is Python code.
_LETTER: Final = {timer: timer.value for timer in Timer}
# The timers a live client transaction may have armed, by kind (RFC 3261 17.1.1, 17.1.2; C:
# 16.6 step 11): cancelling only these, not every client letter, builds half the keys.
_INVITE_CLIENT_LETTERS: Final = (Timer.A.value, Timer.B.value, Timer.C.value, Timer.NO_ANSWER.value)
_NON_INVITE_CLIENT_LETTERS: Final = (Timer.E.value, Timer.F.value, Timer.NO_ANSWER.value)
_SERVER_LETTERS: Final = tuple(t.value for t in SERVER_TIMERS)
_RETIRED_CLIENT_TIMERS: Final = (Timer.D, Timer.K)
_FIRST_PROVISIONAL_STOPS: Final = (Timer.A.value, Timer.B.value, Timer.NO_ANSWER.value)
_ACKED_STATES: Final = (State.COMPLETED.value, State.CONFIRMED.value)  # an ACK is theirs (17.2.1)

# A server transaction that sent its final answer (Completed, Confirmed or Accepted): its state's
# name, the last response, where it went (transport, host, port, connection), Timer G's interval,
# when the request came in, whether a response went upstream already, and its INVITE client's
# branch ("" if none). Atoms only: the collector stops tracking it.
ServerRecord = tuple[str, bytes, str, str, int, int | None, float, float, bool, str]
_STATE: Final = 0
_LAST: Final = 1
_TRANSPORT: Final = 2
_HOST: Final = 3
_PORT: Final = 4
_CONNECTION: Final = 5
_INTERVAL: Final = 6
_STARTED: Final = 7
_RESPONDED: Final = 8
_BRANCH: Final = 9
# A client transaction that got its final answer or timed out (Completed: Timers D, K): our ACK
# for a retransmitted non-2xx final as the bytes before and after its To value (empty for a
# non-INVITE), and the next hop (transport, host, port, TLS name).
ClientRecord = tuple[bytes, bytes, str, str, int, str | None]


@dataclass(frozen=True, slots=True)
class Retarget:
    """Build the server transaction's request for `target` (attempt number `attempt`) and hand
    it back with `start_client`: the previous trunk failed before answering."""

    server: ServerKey
    target: Target
    attempt: int


@dataclass(frozen=True, slots=True)
class RelayStateless:
    """A response no transaction can take any more (a 2xx retransmission): relay it end to end."""

    response: Message


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """An OPTIONS keepalive to trunk `trunk` (its index) ended: its final status, or None."""

    trunk: int
    status: int | None


Action = Retarget | RelayStateless | ProbeResult


class TransactionLayer:
    def __init__(
        self,
        counters: Counts[str] | None = None,
        failover_statuses: frozenset[int] = DEFAULT_FAILOVER_STATUSES,
        no_answer_timeout: float | None = None,
    ) -> None:
        self.counters: Counts[str] = Counts() if counters is None else counters
        self._failover_statuses = failover_statuses
        self._no_answer_timeout = no_answer_timeout
        self._timers = TimerQueue()
        # Live transactions, as objects: servers still waiting for a final answer (the calls
        # being set up), clients still waiting for one. The retired ones are records.
        self._servers: Table[ServerKey, ServerTransaction] = Table()
        self._clients: Table[ClientKey, ClientTransaction] = Table()
        self._retired_servers: Table[ServerKey, ServerRecord] = Table()
        self._retired_clients: Table[ClientKey, ClientRecord] = Table()
        # Drained by copy and clear, never swapped for new lists: a list made during a flood
        # and kept after it holds a pymalloc pool, and with it a 1 MiB arena (issue 7).
        self._unestablished: list[tuple[str, str]] = []
        self._outbox: list[Outgoing] = []
        self._events: list[Event] = []
        self._actions: list[Action] = []

    def shrink(self) -> None:
        """After a flood (issue 7): the tables and the timer queue give back the capacity their
        peak left; the live entries stay. O(live): the memory trim calls it at quiet moments."""
        for table in (self._servers, self._clients, self._retired_servers, self._retired_clients):
            table.shrink()
        self._timers.shrink()

    # ----------------------------------------------------------------- what leaves the layer
    def take_outgoing(self) -> list[Outgoing]:
        out = self._outbox.copy()
        self._outbox.clear()
        return out

    def take_events(self) -> list[Event]:
        events = self._events.copy()
        self._events.clear()
        return events

    def take_into(
        self, outbox: list[Outgoing], events: list[Event]
    ) -> Sequence[tuple[str, str]]:
        """What `take_outgoing` and `take_events` give, appended to the core's own lists (one
        call per message, nothing allocated when there is nothing), and `take_unestablished`."""
        if self._outbox:
            outbox += self._outbox
            self._outbox.clear()
        if self._events:
            events += self._events
            self._events.clear()
        return self.take_unestablished() if self._unestablished else ()

    def take_unestablished(self) -> list[tuple[str, str]]:
        """Dialog-memory keys of INVITEs answered upstream with a non-2xx final since the last
        call: those calls never got a dialog to remember."""
        keys = self._unestablished.copy()
        self._unestablished.clear()
        return keys

    def _take_actions(self) -> list[Action]:
        actions = self._actions.copy()
        self._actions.clear()
        return actions

    @property
    def count(self) -> int:
        return (
            len(self._servers) + len(self._retired_servers)
            + len(self._clients) + len(self._retired_clients)
        )  # fmt: skip

    @property
    def server_count(self) -> int:
        return len(self._servers) + len(self._retired_servers)

    @property
    def pending_server_count(self) -> int:
        """Server transactions still waiting for a final answer: the calls being set up. Those
        that answered and only linger for retransmissions (Timers G/H/I/J/L, RFC 3261 17.2 and
        RFC 6026) are records holding no parsed request, not load: the overload bound counts
        these."""
        return len(self._servers)

    @property
    def timer_count(self) -> int:
        return len(self._timers)

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def server(self, key: ServerKey) -> ServerTransaction | None:
        """A live server transaction (no final answer sent yet)."""
        return self._servers.get(key)

    def has_server(self, key: ServerKey) -> bool:
        """A server transaction of this key, live or retired (answered, lingering for
        retransmissions and the ACK): what a request with that key belongs to."""
        return self._servers.get(key) is not None or self._retired_servers.get(key) is not None

    def retired_server(self, key: ServerKey) -> ServerRecord | None:
        return self._retired_servers.get(key)

    def retired_client(self, branch: str, method: str) -> ClientRecord | None:
        return self._retired_clients.get((branch, method))

    # ----------------------------------------------------------------- server side
    def absorb(self, msg: Message, now: float) -> bool:
        """A retransmitted request (answered with the last response) or the ACK of a non-2xx
        final (RFC 3261 17.2.1): the transaction owns it and nothing goes further."""
        if msg.method == "ACK":
            return self._absorb_ack(server_key(msg, "INVITE"), now)
        key = server_key(msg)
        server = self._servers.get(key)
        if server is not None:  # Proceeding: the last provisional again (17.2.1); Trying: none
            self.counters["retransmissions_absorbed"] += 1
            if server.last_response is not None:
                self._reply(server, server.last_response)
            return True
        record = self._retired_servers.get(key)
        if record is None:
            return False
        self.counters["retransmissions_absorbed"] += 1
        if record[_STATE] != State.ACCEPTED.value:  # RFC 6026 7.1: Accepted absorbs silently
            self._reply_record(record, record[_LAST])
        return True

    def _absorb_ack(self, key: ServerKey, now: float) -> bool:
        record = self._retired_servers.get(key)
        if record is None or record[_STATE] not in _ACKED_STATES:
            return False  # an ACK for a 2xx is its own end-to-end transaction
        if record[_STATE] == State.COMPLETED.value:
            state = next_state(INVITE_SERVER, State.COMPLETED, Input.ACK)  # Confirmed
            self._retired_servers[key] = (state.value, *record[_LAST:])
            self._timers.cancel_all(key, (Timer.G.value, Timer.H.value))
            self._arm(key, Timer.I, now + (0 if record[_TRANSPORT] != "udp" else T4))
        self.counters["ack_absorbed"] += 1
        return True

    def open_server(self, msg: Message, source: Source, now: float) -> ServerTransaction:
        server = ServerTransaction(
            key=server_key(msg), method=msg.method, source=source, request=msg, started=now
        )
        self._servers[server.key] = server
        if msg.method == "INVITE":  # RFC 3261 17.2.1: 100 Trying at once, Proceeding
            server.state = State.PROCEEDING
            server.trying_base = ResponseBase.of(msg.wire)
            server.last_response = server.trying_base.render(100, "Trying")
            self._reply(server, server.last_response)
        return server

    def invite_server_for_cancel(self, cancel: Message) -> ServerTransaction | None:
        """The live INVITE server transaction a CANCEL is for, if it went on downstream."""
        invite = self._servers.get(server_key(cancel, "INVITE"))
        return invite if invite is not None and invite.client_key is not None else None

    def cancel_invite(self, cancel: Message, source: Source, now: float) -> bool:
        """Hop-by-hop CANCEL (RFC 3261 16.10) of the INVITE it matches, live or already
        answered upstream (then only its 200 here, and a CANCEL to a trunk still pending);
        False when no forwarded INVITE matches (the core forwards it statelessly)."""
        key = server_key(cancel, "INVITE")
        invite = self._servers.get(key)
        if invite is not None:
            if invite.client_key is None:
                return False
            self.cancel(invite, cancel, source, now)
            return True
        record = self._retired_servers.get(key)
        if record is None or not record[_BRANCH]:
            return False
        self._answer_cancel(cancel, source, now)
        self._cancel_downstream(self._clients.get((record[_BRANCH], "INVITE")), now)
        return True

    def cancel(
        self, invite: ServerTransaction, cancel: Message, source: Source, now: float
    ) -> None:
        """Hop-by-hop CANCEL (RFC 3261 16.10): 200 here, CANCEL downstream once it may be sent."""
        invite.cancelled = True  # no failover to another trunk after this
        self._answer_cancel(cancel, source, now)
        if invite.client_key is not None:
            self._cancel_downstream(self._clients.get(invite.client_key), now)

    def _answer_cancel(self, cancel: Message, source: Source, now: float) -> None:
        cancel_server = ServerTransaction(server_key(cancel), "CANCEL", source, cancel, now)
        self._send_final(cancel_server, build_response(cancel.wire, 200, "OK"), 200, now)

    def _cancel_downstream(self, client: ClientTransaction | None, now: float) -> None:
        if client is None:
            return
        if client.state is State.PROCEEDING:
            self._send_cancel(client, now)
        elif client.state in (State.CALLING, State.TRYING):
            client.cancel_pending = True  # RFC 3261 9.1: wait for a provisional response

    def answer(self, server: ServerTransaction, status: int, reason: str, now: float) -> None:
        """The proxy's own final answer upstream (no usable answer downstream, or nothing could
        be sent there at all)."""
        if server.final_sent:
            return
        base = server.answer_base or server.trying_base
        if base is None and server.request is not None:
            base = ResponseBase.of(server.request.wire)
        if base is None:
            return
        self._send_final(server, base.render(status, reason), status, now)

    def release_request(self, server: ServerTransaction) -> None:
        """Nothing more to build from the request (its last next hop has it): keep only what
        our own answer copies from it (issue 7: a pending call's memory, and GC-tracked objects,
        issue 6)."""
        if server.request is not None and not server.alternatives:
            server.answer_base = server.trying_base or ResponseBase.of(server.request.wire)
            server.request, server.plan, server.trying_base = None, None, None

    def _reply(self, server: ServerTransaction, data: bytes) -> None:
        self._outbox.append(Outgoing(data, server.reply_to, server.source.connection))

    def _reply_record(self, record: ServerRecord, data: bytes) -> None:
        target = Target(record[_TRANSPORT], record[_HOST], record[_PORT])
        self._outbox.append(Outgoing(data, target, record[_CONNECTION]))

    def _send_final(
        self, server: ServerTransaction, data: bytes, status: int, now: float
    ) -> None:
        """The final answer upstream; the transaction is retired to a record for its timers."""
        server.last_response = data
        if server.dialog is not None:
            if status >= 300:
                self._unestablished.append(server.dialog)
            server.dialog = None
        server.state = next_state(server.machine, server.state, response_input(status))
        server.request, server.plan = None, None  # nothing more to build from them
        server.answer_base = server.trying_base = None
        server.alternatives.clear()
        self._reply(server, data)
        key, reliable = server.key, _reliable(server)
        if server.state is State.ACCEPTED:
            self._arm(key, Timer.L, now + TIMER_L)
        elif server.method == "INVITE":
            if not reliable:
                server.retransmit_interval = T1
                self._arm(key, Timer.G, now + T1)
            self._arm(key, Timer.H, now + TIMER_H)
        else:
            self._arm(key, Timer.J, now + (0 if reliable else TIMER_J))
        self._retire_server(server)

    def _retire_server(self, server: ServerTransaction) -> None:
        self._servers.pop(server.key, None)
        source = server.source
        self._retired_servers[server.key] = (
            server.state.value,
            server.last_response or b"",
            source.transport,
            source.host,
            source.port,
            source.connection,
            server.retransmit_interval,
            server.started,
            server.responded,
            server.client_key[0] if server.client_key is not None else "",
        )

    # ----------------------------------------------------------------- client side
    def start_client(self, client: ClientTransaction, now: float, side: str = "") -> None:
        server = self._servers.get(client.server_key) if client.server_key else None
        if server is not None and client.method != "CANCEL":
            server.client_key = client.key
        key = client.key
        self._clients[key] = client
        self.counters["forwarded"] += 1
        self._events.append(Forwarded(client.method, client.target, side))
        self._outbox.append(Outgoing(client.request, client.target))
        invite = client.method == "INVITE"
        if not client.reliable:
            client.retransmit_interval = T1
            self._arm(key, Timer.A if invite else Timer.E, now + T1)
        if invite:
            self._arm(key, Timer.B, now + TIMER_B)
            timeout = self._no_answer_timeout
            if timeout is not None and server is not None and server.alternatives:
                self._arm(key, Timer.NO_ANSWER, now + timeout)
        else:
            self._arm(key, Timer.F, now + TIMER_F)
            if client.probe is not None and self._no_answer_timeout is not None:
                self._arm(key, Timer.NO_ANSWER, now + self._no_answer_timeout)

    def client_for(self, branch: str, method: str) -> ClientTransaction | None:
        """A live client transaction (no final response yet, or a 2xx not yet relayed)."""
        return self._clients.get((branch, method))

    def on_response(self, client: ClientTransaction, msg: Message, now: float) -> list[Action]:
        if msg.wire.status < 200:
            self._on_provisional(client, msg, now)
        else:
            self._on_final(client, msg, now)
        return self._take_actions()

    def on_response_to(
        self, branch: str, method: str, msg: Message, now: float
    ) -> list[Action] | None:
        """A response for our `branch`: to its live client transaction, or absorbed by a retired
        one (RFC 3261 17.1.1.2: a retransmitted non-2xx final is ACKed again; 17.1.2.2: a
        non-INVITE's absorbed); None when no transaction knows it (stateless from here)."""
        key = (branch, method)
        client = self._clients.get(key)
        if client is not None:
            return self.on_response(client, msg, now)
        record = self._retired_clients.get(key)
        if record is None:
            return None
        status = msg.wire.status
        if method != "INVITE" or status < 200:
            return []
        if status < 300:  # a 2xx retransmission: end to end (RFC 3261 16.7 step 5)
            return [RelayStateless(msg)]
        self._ack_again(record, msg)
        return []

    def on_trying(self, branch: str, method: str, now: float) -> list[Action] | None:
        """A 100 Trying for our `branch`, read from a glance: the live client transaction's
        step (RFC 3261 17.1.1.2 / 17.1.2.2), or None when no live one has it (the caller then
        parses the 100 and goes the way of every response)."""
        client = self._clients.get((branch, method))
        if client is None:
            return None
        self._advance_provisional(client, 100, now)
        return self._take_actions()

    def _ack_again(self, record: ClientRecord, response: Message) -> None:
        head, tail, transport, host, port, name = record
        if not head:
            return
        to_header = response.wire.one("to")
        to_value = response.raw[to_header.value_start : to_header.value_end]
        self._outbox.append(Outgoing(head + to_value + tail, Target(transport, host, port, name)))

    def _send_cancel(self, invite: ClientTransaction, now: float) -> None:
        cancel = ClientTransaction(
            branch=invite.branch,
            method="CANCEL",
            target=invite.target,
            request=hop_request(invite.request, "CANCEL"),
            server_key=None,
        )
        invite.cancel_pending = False
        self.start_client(cancel, now)

    def _on_provisional(self, client: ClientTransaction, msg: Message, now: float) -> None:
        status = msg.wire.status
        self._advance_provisional(client, status, now)
        if status == 100 or not self._is_current(client):
            return  # 100 Trying is hop by hop (we sent our own); a superseded trunk is cancelled
        self._relay_to_server(client, msg, now)

    def _advance_provisional(self, client: ClientTransaction, status: int, now: float) -> None:
        before = client.state
        client.state = next_state(client.machine, before, Input.PROVISIONAL)
        key = client.key
        if before in (State.CALLING, State.TRYING):
            self._timers.cancel_all(key, _FIRST_PROVISIONAL_STOPS)
            if client.method == "INVITE":
                self._arm(key, Timer.C, now + TIMER_C)
            elif not client.reliable:
                client.retransmit_interval = T2  # Timer E continues at T2 (17.1.2.2)
        elif (
            client.method == "INVITE"
            and status > 100
            and self._timers.is_armed(key, Timer.C.value)
        ):
            self._arm(key, Timer.C, now + TIMER_C)  # RFC 3261 16.7 step 2: reset
        if client.cancel_pending:
            self._send_cancel(client, now)

    def _on_final(self, client: ClientTransaction, msg: Message, now: float) -> None:
        status = msg.wire.status
        invite = client.method == "INVITE"
        if not client.pending:  # a retransmission, or a late final after our timeout
            if invite and status >= 300:
                self._outbox.append(Outgoing(_ack_for(client, msg), client.target))
            elif invite:
                self._actions.append(RelayStateless(msg))  # 2xx retransmission: end to end
            return
        self._timers.cancel_all(client.key, _live_letters(client))
        client.state = next_state(client.machine, client.state, response_input(status))
        if invite and status >= 300:
            head, to_value, tail = _ack_parts(client, msg)
            self._outbox.append(Outgoing(head + to_value + tail, client.target))
            wait = 0 if client.reliable else TIMER_D
            self._retire_client(client, Timer.D, now + wait, head, tail)
        elif invite:
            self._end_client(client, cancelled=True)
        else:
            self._retire_client(client, Timer.K, now + (0 if client.reliable else T4))
        if client.probe is not None:
            self._actions.append(ProbeResult(client.probe, status))
        server = self._server_of(client)
        if server is None:
            if invite and status < 300:
                self._relay_late_2xx(client, msg, now)
            return
        if not self._is_current(client) and status >= 300:
            return  # a trunk we already failed over from: ACKed, not the caller's answer
        if status in self._failover_statuses and self._try_next_hop(server, client, status):
            return  # this trunk's failure is not the caller's answer: the next trunk's will be
        self._relay_to_server(client, msg, now)

    def _server_of(self, client: ClientTransaction) -> ServerTransaction | None:
        return self._servers.get(client.server_key) if client.server_key else None

    def _is_current(self, client: ClientTransaction) -> bool:
        """The server transaction's latest attempt (not one it failed over from)."""
        server = self._server_of(client)
        return server is not None and server.client_key == client.key

    def _relay_to_server(self, client: ClientTransaction, msg: Message, now: float) -> None:
        """A response upstream along a live server transaction (one answered upstream is a
        record, and only a late 2xx still goes there: `_relay_late_2xx`)."""
        server = self._server_of(client)
        if server is None:
            return
        status = msg.wire.status
        data = self._upstream_bytes(msg, client.restore)
        if data is None:
            if status >= 200:  # unrelayable final: still end the transaction
                self._answer_upstream(server, client, 502, "Bad Gateway", now)
            return
        self.counters["responses_relayed"] += 1
        first = not server.responded
        server.responded = True
        self._events.append(
            ResponseRelayed(server.method, status, client.target, now - server.started, first)
        )
        if status < 200:
            server.state = next_state(server.machine, server.state, Input.PROVISIONAL)
            server.last_response = data
            self._reply(server, data)
        else:
            self._send_final(server, data, status, now)

    def _relay_late_2xx(self, client: ClientTransaction, msg: Message, now: float) -> None:
        """RFC 3261 16.7 step 5: a 2xx goes upstream even after a final went there (another
        trunk's 2xx, or our own 408)."""
        key = client.server_key
        record = self._retired_servers.get(key) if key is not None else None
        if record is None or key is None or key[-1] != "INVITE":
            return
        data = self._upstream_bytes(msg, client.restore)
        if data is None:
            return
        self.counters["responses_relayed"] += 1
        started, responded = record[_STARTED], record[_RESPONDED]
        self._events.append(
            ResponseRelayed("INVITE", msg.wire.status, client.target, now - started, not responded)
        )
        if not responded:
            self._retired_servers[key] = (*record[:_RESPONDED], True, record[_BRANCH])
        self._reply_record(record, data)

    def _upstream_bytes(self, msg: Message, restore: Restore | None) -> bytes | None:
        data = upstream_bytes(msg, restore)
        if data is None:
            self.counters["dropped"] += 1
            self._events.append(Dropped("response with only our Via", None))
        return data

    def _end_client(self, client: ClientTransaction, *, cancelled: bool = False) -> None:
        if not cancelled:  # its timers, unless the caller has just cancelled them
            self._timers.cancel_all(client.key, _live_letters(client))
        client.state = State.TERMINATED
        self._clients.pop(client.key, None)

    def _retire_client(
        self,
        client: ClientTransaction,
        timer: Timer,
        deadline: float,
        ack_head: bytes = b"",
        ack_tail: bytes = b"",
    ) -> None:
        """Completed (after its final or a timeout): only Timer D or K left, as a record."""
        self._clients.pop(client.key, None)
        target = client.target
        self._retired_clients[client.key] = (
            ack_head, ack_tail, target.transport, target.host, target.port, target.name
        )
        self._arm(client.key, timer, deadline)

    def _answer_upstream(
        self,
        server: ServerTransaction | None,
        client: ClientTransaction,
        status: int,
        reason: str,
        now: float,
        timer: Timer | None = None,
    ) -> None:
        """No usable answer downstream: the proxy answers upstream itself (RFC 3261 16.7/16.8)."""
        if server is None or server.final_sent:
            return
        if timer is not None:
            self._events.append(TimedOut(client.method, client.target, timer.value, status))
        else:
            self._events.append(Answered(client.method, client.target, status, reason))
        self.answer(server, status, reason, now)

    # ----------------------------------------------------------------- failures and timers
    def transport_failed(self, target: Target, now: float) -> list[Action]:
        """The adapter could not reach `target` (RFC 3261 8.1.3.1, 16.7 step 4): 503 upstream,
        or the next trunk."""
        for client in [c for c in self._clients.values() if c.target == target]:
            if client.pending and client.method != "CANCEL":
                self.counters["transport_failures"] += 1
                self._end_client(client)
                if client.probe is not None:
                    self._actions.append(ProbeResult(client.probe, None))
                if not self._is_current(client):
                    continue
                server = self._server_of(client)
                if server is None or not self._try_next_hop(server, client, None, "unreachable"):
                    self._answer_upstream(server, client, 503, "Service Unavailable", now)
        return self._take_actions()

    def handle_timer(self, now: float) -> list[Action]:
        for owner, letter in self._timers.pop_due(now):
            timer = _TIMER_OF[letter]
            if timer in SERVER_TIMERS:
                self._server_timer(cast(ServerKey, owner), timer, now)
            elif timer in _RETIRED_CLIENT_TIMERS:
                # Timer D or K: the transaction has absorbed its retransmissions (Terminated).
                self._retired_clients.pop(cast(ClientKey, owner), None)
            else:
                client = self._clients.get(cast(ClientKey, owner))
                if client is not None:
                    self._client_timer(client, timer, now)
        return self._take_actions()

    def _client_timer(self, client: ClientTransaction, timer: Timer, now: float) -> None:
        if timer in (Timer.A, Timer.E):
            self._retransmit(client, timer, now)
        elif timer in (Timer.B, Timer.F):
            self._time_out(client, timer, now)
        elif timer is Timer.NO_ANSWER:
            self._no_answer(client)
        elif timer is Timer.C:
            # RFC 3261 16.8: CANCEL downstream and answer 408 upstream ourselves; the client
            # transaction stays to ACK the 487 that the CANCEL brings (Timer B bounds the wait).
            self.counters["timeouts"] += 1
            self._send_cancel(client, now)
            self._answer_upstream(
                self._server_of(client), client, 408, "Request Timeout", now, Timer.C
            )
            self._arm(client.key, Timer.B, now + TIMER_B)

    def _retransmit(self, client: ClientTransaction, timer: Timer, now: float) -> None:
        """Timer A doubles without bound (Timer B ends it); Timer E is capped at T2, and stays
        at T2 once a provisional arrived (RFC 3261 17.1.2.2)."""
        self.counters["retransmissions_sent"] += 1
        self._outbox.append(Outgoing(client.request, client.target))
        interval = client.retransmit_interval * 2
        if timer is Timer.E:
            interval = T2 if client.state is State.PROCEEDING else min(interval, T2)
        client.retransmit_interval = interval
        self._arm(client.key, timer, now + interval)

    def _time_out(self, client: ClientTransaction, timer: Timer, now: float) -> None:
        """408 upstream (or the next trunk, if this one never answered at all), but the
        transaction lingers as completed: a late non-2xx final is then ACKed and absorbed (not
        relayed on top of our 408), a late 2xx still goes end to end."""
        self.counters["timeouts"] += 1
        if client.probe is not None:
            self._actions.append(ProbeResult(client.probe, None))
        silent = client.state in (State.CALLING, State.TRYING)
        self._timers.cancel_all(client.key, _live_letters(client))
        client.state = next_state(client.machine, client.state, Input.TIMEOUT)
        head = tail = b""
        if client.method == "INVITE":
            head, _, tail = hop_request_parts(client.request, "ACK")
        self._retire_client(client, Timer.D, now + TIMER_D, head, tail)
        if not self._is_current(client):
            return  # superseded by a failover: nothing to answer
        server = self._server_of(client)
        if not (silent and server is not None and self._try_next_hop(server, client, None)):
            self._answer_upstream(server, client, 408, "Request Timeout", now, timer)

    def _no_answer(self, client: ClientTransaction) -> None:
        """Not even a provisional from this trunk in time: the next trunk gets the call. This
        one stops being retransmitted to, is CANCELled if it wakes up (RFC 3261 9.1: not before
        a provisional) and ends with Timer B; a late 2xx from it still goes upstream."""
        if client.probe is not None:
            self._probe_unanswered(client)
            return
        server = self._server_of(client)
        if client.state is not State.CALLING or server is None or not self._is_current(client):
            return
        if self._try_next_hop(server, client, None, "no answer"):
            self._timers.cancel(client.key, Timer.A.value)
            client.cancel_pending = True

    def _probe_unanswered(self, client: ClientTransaction) -> None:
        """A keepalive with no answer at all within the no-answer timeout has failed (the way
        a call would fail over), not only at Timer F's 32 s: a silent trunk is marked down
        after `probe_failures` such probes. A late answer is then a stray."""
        if client.state is State.TRYING and client.probe is not None:
            self._actions.append(ProbeResult(client.probe, None))
            self._end_client(client)

    def _try_next_hop(
        self,
        server: ServerTransaction,
        failed: ClientTransaction,
        status: int | None,
        cause: str = "timeout",
    ) -> bool:
        """Failover (like Kamailio's dispatcher): the same request, built anew by the core for
        the next trunk, as a new client transaction; never after a CANCEL or a final upstream."""
        if server.cancelled or server.final_sent or not server.alternatives:
            return False
        if server.plan is None:
            return False
        target = server.alternatives.pop(0)
        server.attempt += 1
        cause = f"{status}" if status is not None else cause
        self.counters["failovers"] += 1
        self._events.append(FailedOver(server.method, failed.target, target, status, cause))
        self._actions.append(Retarget(server.key, target, server.attempt))
        return True

    def _server_timer(self, key: ServerKey, timer: Timer, now: float) -> None:
        """Timers of a server transaction that answered upstream: G resends a non-2xx final
        (17.2.1, doubling up to T2) until the ACK; H, I, J and L end it (Terminated)."""
        record = self._retired_servers.get(key)
        if record is None:
            return
        if timer is Timer.G and record[_STATE] == State.COMPLETED.value and record[_LAST]:
            self._reply_record(record, record[_LAST])
            interval = min(record[_INTERVAL] * 2, T2)
            self._retired_servers[key] = (*record[:_INTERVAL], interval, *record[_STARTED:])
            self._arm(key, Timer.G, now + interval)
            return
        self._timers.cancel_all(key, _SERVER_LETTERS)
        del self._retired_servers[key]

    def _arm(self, owner: ServerKey | ClientKey, timer: Timer, deadline: float) -> None:
        self._timers.arm(owner, _LETTER[timer], deadline)


def _live_letters(client: ClientTransaction) -> tuple[str, ...]:
    return _INVITE_CLIENT_LETTERS if client.method == "INVITE" else _NON_INVITE_CLIENT_LETTERS


def _reliable(server: ServerTransaction) -> bool:
    return server.source.transport != "udp"


def upstream_bytes(msg: Message, restore: Restore | None) -> bytes | None:
    """A response as it goes upstream: our Via off, the sender's identity given back; None when
    our Via is the only one (nowhere to relay)."""
    if len(msg.vias) < 2:
        return None
    edits = [remove_via_value(msg.wire, msg.vias, msg.vias[0])]
    if restore is not None:
        edits += replace_identity_header(msg, restore.header, restore.value)
    return apply_edits(msg.raw, edits, msg.wire.body_end)


def _ack_for(client: ClientTransaction, response: Message) -> bytes:
    """The ACK a proxy sends itself for a non-2xx final (RFC 3261 17.1.1.3)."""
    head, to_value, tail = _ack_parts(client, response)
    return head + to_value + tail


def _ack_parts(client: ClientTransaction, response: Message) -> tuple[bytes, bytes, bytes]:
    """That ACK as the bytes before its To value, the value and the bytes after: its To is the
    response's, as the next hop sent it (the restore is for the copy going upstream)."""
    head, _, tail = hop_request_parts(client.request, "ACK")
    to_header = response.wire.one("to")
    return head, response.raw[to_header.value_start : to_header.value_end], tail


# ----------------------------------------------------------------- CANCEL and ACK from the bytes
def hop_request(request: bytes, method: str, to_value: bytes | None = None) -> bytes:
    """CANCEL (RFC 3261 9.1) or ACK for a non-2xx (17.1.1.3) for a request we forwarded: its
    Request-URI, top Via (ours), Route set, From, Call-ID, To and CSeq number as sent."""
    head, sent_to, tail = hop_request_parts(request, method)
    return head + (sent_to if to_value is None else to_value) + tail


def hop_request_parts(request: bytes, method: str) -> tuple[bytes, bytes, bytes]:
    """`hop_request` as the bytes up to the To value, the To value as sent, and the rest: an
    ACK for a retransmitted final is the same bytes around that response's To.

    Read from the request as we sent it (the client transaction keeps those bytes to resend
    them), split again only when a CANCEL or such an ACK is needed. A pending INVITE keeping
    the incoming message's parse for this instead held some 5.6 KB of small objects per call:
    17 MB across a silent-trunk flood's 3,000 pending calls, spread over pymalloc arenas that a
    few long-lived objects then kept mapped after the flood (issue 7)."""
    sent = split_message(request)
    raw = sent.raw
    uri = raw[: raw.index(b"\n")].split(b" ", 2)[1]
    lines = [method.encode() + b" " + uri + b" SIP/2.0\r\n"]
    via = sent.get("via")
    if via is not None:  # ours, on its own line: the first value is all of it
        value = raw[via.value_start : via.value_end]
        lines.append(b"Via: " + value.split(b",", 1)[0].strip() + b"\r\n")
    for header in sent.get_all("route"):
        lines.append(b"Route: " + raw[header.value_start : header.value_end] + b"\r\n")
    lines.append(b"Max-Forwards: 70\r\n")
    for name, label in (("from", b"From"), ("call-id", b"Call-ID")):
        found = sent.get(name)
        if found is not None:
            lines.append(label + b": " + raw[found.value_start : found.value_end] + b"\r\n")
    to_header = sent.get("to")
    to_value = b"" if to_header is None else raw[to_header.value_start : to_header.value_end]
    cseq = sent.get("cseq")
    number = raw[cseq.value_start : cseq.value_end].split()[0] if cseq else b"1"
    lines.append(b"To: ")
    tail = b"\r\nCSeq: " + number + b" " + method.encode() + b"\r\nContent-Length: 0\r\n\r\n"
    return b"".join(lines), to_value, tail

"""The transaction layer (Kamailio's tm): server and client transactions, their state machines
and RFC 3261 timers. It decides *when* something is sent or absorbed and owns what it sends
(`take_outgoing`) and what happened (`take_events`). It never calls back into the core: where
the core must act (build the request for the next trunk, relay a 2xx statelessly) it returns
an action.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import cast

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.caller_id import replace_identity_header
from proxy.sip.edits import Edit, apply_edits, remove_via_value
from proxy.sip.events import (
    Answered,
    Dropped,
    Event,
    FailedOver,
    Forwarded,
    ResponseRelayed,
    TimedOut,
)
from proxy.sip.message import Header
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
    Timer,
    TimerQueue,
)
from proxy.sip.transactions import (
    ClientKey,
    ClientTransaction,
    Input,
    Restore,
    SentRequest,
    ServerKey,
    ServerTransaction,
    State,
    next_state,
    response_input,
    server_key,
)

CLIENT_TIMERS = (
    Timer.A, Timer.B, Timer.C, Timer.D, Timer.E, Timer.F, Timer.K, Timer.NO_ANSWER
)
SERVER_TIMERS = (Timer.G, Timer.H, Timer.I, Timer.J, Timer.L)
DEFAULT_FAILOVER_STATUSES = frozenset((408, 500, 502, 503, 504))


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
        counters: Counter[str] | None = None,
        failover_statuses: frozenset[int] = DEFAULT_FAILOVER_STATUSES,
        no_answer_timeout: float | None = None,
    ) -> None:
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._failover_statuses = failover_statuses
        self._no_answer_timeout = no_answer_timeout
        self._timers = TimerQueue()
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._pending: set[ServerKey] = set()  # servers that have not sent a final yet
        self._unestablished: list[tuple[str, str]] = []
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._outbox: list[Outgoing] = []
        self._events: list[Event] = []
        self._actions: list[Action] = []

    # ----------------------------------------------------------------- what leaves the layer
    def take_outgoing(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def take_unestablished(self) -> list[tuple[str, str]]:
        """Dialog-memory keys of INVITEs answered upstream with a non-2xx final since the last
        call: those calls never got a dialog to remember."""
        keys, self._unestablished = self._unestablished, []
        return keys

    def _take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    @property
    def count(self) -> int:
        return len(self._servers) + len(self._clients)

    @property
    def server_count(self) -> int:
        return len(self._servers)

    @property
    def pending_server_count(self) -> int:
        """Server transactions still waiting for a final answer: the calls being set up. Those
        that answered and only linger for retransmissions (Timers G/H/I/J/L, RFC 3261 17.2 and
        RFC 6026) hold no parsed request and are not load: the overload bound counts these."""
        return len(self._pending)

    @property
    def timer_count(self) -> int:
        return len(self._timers)

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def server(self, key: ServerKey) -> ServerTransaction | None:
        return self._servers.get(key)

    # ----------------------------------------------------------------- server side
    def absorb(self, msg: Message, now: float) -> bool:
        """A retransmitted request (answered with the last response) or the ACK of a non-2xx
        final (RFC 3261 17.2.1): the transaction owns it and nothing goes further."""
        if msg.method == "ACK":
            server = self._servers.get(server_key(msg, "INVITE"))
            if server is None or server.state not in (State.COMPLETED, State.CONFIRMED):
                return False  # an ACK for a 2xx is its own end-to-end transaction
            if server.state is State.COMPLETED:
                server.state = next_state(server.machine, server.state, Input.ACK)
                self._timers.cancel_all(server.key, (Timer.G, Timer.H))
                self._timers.arm(server.key, Timer.I, now + (0 if _reliable(server) else T4))
            self.counters["ack_absorbed"] += 1
            return True
        server = self._servers.get(server_key(msg))
        if server is None:
            return False
        self.counters["retransmissions_absorbed"] += 1
        if server.last_response is not None and server.state is not State.ACCEPTED:
            self._reply(server, server.last_response)
        return True

    def open_server(self, msg: Message, source: Source, now: float) -> ServerTransaction:
        server = ServerTransaction(
            key=server_key(msg), method=msg.method, source=source, request=msg, started=now
        )
        self._servers[server.key] = server
        self._pending.add(server.key)
        if msg.method == "INVITE":  # RFC 3261 17.2.1: 100 Trying at once, Proceeding
            server.state = State.PROCEEDING
            server.last_response = build_response(msg.wire, 100, "Trying")
            self._reply(server, server.last_response)
        return server

    def invite_server_for_cancel(self, cancel: Message) -> ServerTransaction | None:
        invite = self._servers.get(server_key(cancel, "INVITE"))
        return invite if invite is not None and invite.client_key is not None else None

    def cancel(
        self, invite: ServerTransaction, cancel: Message, source: Source, now: float
    ) -> None:
        """Hop-by-hop CANCEL (RFC 3261 16.10): 200 here, CANCEL downstream once it may be sent."""
        invite.cancelled = True  # no failover to another trunk after this
        cancel_server = ServerTransaction(server_key(cancel), "CANCEL", source, cancel, now)
        self._servers[cancel_server.key] = cancel_server
        self._send_final(cancel_server, build_response(cancel.wire, 200, "OK"), 200, now)
        client = self._clients.get(invite.client_key) if invite.client_key else None
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
        base = server.answer_base
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
            server.answer_base = ResponseBase.of(server.request.wire)
            server.request, server.plan = None, None

    def _reply(self, server: ServerTransaction, data: bytes) -> None:
        source = server.source
        self._outbox.append(Outgoing(data, source.reply_target(), source.connection))

    def _send_final(
        self, server: ServerTransaction, data: bytes, status: int, now: float
    ) -> None:
        server.last_response = data
        self._pending.discard(server.key)
        if server.dialog is not None:
            if status >= 300:
                self._unestablished.append(server.dialog)
            server.dialog = None
        server.state = next_state(server.machine, server.state, response_input(status))
        server.request, server.plan = None, None  # nothing more to build from them
        server.answer_base = None
        server.alternatives.clear()
        self._reply(server, data)
        if server.state is State.ACCEPTED:
            self._timers.arm(server.key, Timer.L, now + TIMER_L)
        elif server.method == "INVITE":
            if not _reliable(server):
                server.retransmit_interval = T1
                self._timers.arm(server.key, Timer.G, now + T1)
            self._timers.arm(server.key, Timer.H, now + TIMER_H)
        else:
            self._timers.arm(server.key, Timer.J, now + (0 if _reliable(server) else TIMER_J))

    # ----------------------------------------------------------------- client side
    def start_client(self, client: ClientTransaction, now: float, side: str = "") -> None:
        server = self._servers.get(client.server_key) if client.server_key else None
        if server is not None and client.method != "CANCEL":
            server.client_key = client.key
        self._clients[client.key] = client
        self.counters["forwarded"] += 1
        self._events.append(Forwarded(client.method, client.target, side))
        self._outbox.append(Outgoing(client.request, client.target))
        if not client.reliable:
            client.retransmit_interval = T1
            first = Timer.A if client.method == "INVITE" else Timer.E
            self._timers.arm(client.key, first, now + T1)
        if client.method == "INVITE":
            self._timers.arm(client.key, Timer.B, now + TIMER_B)
            timeout = self._no_answer_timeout
            if timeout is not None and server is not None and server.alternatives:
                self._timers.arm(client.key, Timer.NO_ANSWER, now + timeout)
        else:
            self._timers.arm(client.key, Timer.F, now + TIMER_F)
            if client.probe is not None and self._no_answer_timeout is not None:
                self._timers.arm(client.key, Timer.NO_ANSWER, now + self._no_answer_timeout)

    def client_for(self, branch: str, method: str) -> ClientTransaction | None:
        return self._clients.get((branch, method))

    def on_response(self, client: ClientTransaction, msg: Message, now: float) -> list[Action]:
        if msg.wire.status < 200:
            self._on_provisional(client, msg, now)
        else:
            self._on_final(client, msg, now)
        return self._take_actions()

    def _send_cancel(self, invite: ClientTransaction, now: float) -> None:
        assert invite.sent is not None
        cancel = ClientTransaction(
            branch=invite.branch,
            method="CANCEL",
            target=invite.target,
            request=hop_request(invite.sent, "CANCEL"),
            server_key=None,
        )
        invite.cancel_pending = False
        self.start_client(cancel, now)

    def _on_provisional(self, client: ClientTransaction, msg: Message, now: float) -> None:
        before = client.state
        client.state = next_state(client.machine, before, Input.PROVISIONAL)
        if before in (State.CALLING, State.TRYING):
            self._timers.cancel_all(client.key, (Timer.A, Timer.B, Timer.NO_ANSWER))
            if client.method == "INVITE":
                self._timers.arm(client.key, Timer.C, now + TIMER_C)
            elif not client.reliable:
                client.retransmit_interval = T2  # Timer E continues at T2 (17.1.2.2)
        elif (
            client.method == "INVITE"
            and msg.wire.status > 100
            and self._timers.is_armed(client.key, Timer.C)
        ):
            self._timers.arm(client.key, Timer.C, now + TIMER_C)  # RFC 3261 16.7 step 2: reset
        if client.cancel_pending:
            self._send_cancel(client, now)
        if msg.wire.status == 100 or not self._is_current(client):
            return  # 100 Trying is hop by hop (we sent our own); a superseded trunk is cancelled
        self._relay_to_server(client, msg, now)

    def _on_final(self, client: ClientTransaction, msg: Message, now: float) -> None:
        status = msg.wire.status
        invite = client.method == "INVITE"
        if not client.pending:  # a retransmission, or a late final after our timeout
            if invite and status >= 300:
                self._outbox.append(Outgoing(_ack_for(client, msg), client.target))
            elif invite:
                self._actions.append(RelayStateless(msg))  # 2xx retransmission: end to end
            return
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = next_state(client.machine, client.state, response_input(status))
        if invite and status >= 300:
            self._outbox.append(Outgoing(_ack_for(client, msg), client.target))
            self._timers.arm(client.key, Timer.D, now + (0 if client.reliable else TIMER_D))
        elif invite:
            self._end_client(client)
        else:
            self._timers.arm(client.key, Timer.K, now + (0 if client.reliable else T4))
        if client.probe is not None:
            self._actions.append(ProbeResult(client.probe, status))
        server = self._server_of(client)
        if server is None:
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
        server = self._server_of(client)
        if server is None:
            return
        status = msg.wire.status
        late_2xx = server.final_sent and server.method == "INVITE" and 200 <= status < 300
        if server.final_sent and not late_2xx:
            return  # upstream already has its final answer (e.g. our own 408)
        data = self._upstream_bytes(msg, client.restore)
        if data is None:
            if status >= 200 and not late_2xx:  # unrelayable final: still end the transaction
                self._answer_upstream(server, client, 502, "Bad Gateway", now)
            return
        self.counters["responses_relayed"] += 1
        first = not server.responded
        server.responded = True
        self._events.append(
            ResponseRelayed(server.method, status, client.target, now - server.started, first)
        )
        if late_2xx:  # RFC 3261 16.7 step 5: a 2xx goes upstream even after our own final
            self._reply(server, data)
        elif status < 200:
            server.state = next_state(server.machine, server.state, Input.PROVISIONAL)
            server.last_response = data
            self._reply(server, data)
        else:
            self._send_final(server, data, status, now)

    def _upstream_bytes(self, msg: Message, restore: Restore | None) -> bytes | None:
        data = upstream_bytes(msg, restore)
        if data is None:
            self.counters["dropped"] += 1
            self._events.append(Dropped("response with only our Via", None))
        return data

    def _end_client(self, client: ClientTransaction) -> None:
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = State.TERMINATED
        self._clients.pop(client.key, None)

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
        for owner, name in self._timers.pop_due(now):
            timer = cast(Timer, name)
            # Client keys are (branch, method); server keys are longer tuples: no collision.
            client = self._clients.get(cast(ClientKey, owner))
            if client is not None:
                self._client_timer(client, timer, now)
                continue
            server = self._servers.get(cast(ServerKey, owner))
            if server is not None:
                self._server_timer(server, timer, now)
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
            self._timers.arm(client.key, Timer.B, now + TIMER_B)
        else:  # D, K: the transaction has absorbed its retransmissions
            client.state = next_state(client.machine, client.state, Input.END)
            self._end_client(client)

    def _retransmit(self, client: ClientTransaction, timer: Timer, now: float) -> None:
        """Timer A doubles without bound (Timer B ends it); Timer E is capped at T2, and stays
        at T2 once a provisional arrived (RFC 3261 17.1.2.2)."""
        self.counters["retransmissions_sent"] += 1
        self._outbox.append(Outgoing(client.request, client.target))
        interval = client.retransmit_interval * 2
        if timer is Timer.E:
            interval = T2 if client.state is State.PROCEEDING else min(interval, T2)
        client.retransmit_interval = interval
        self._timers.arm(client.key, timer, now + interval)

    def _time_out(self, client: ClientTransaction, timer: Timer, now: float) -> None:
        """408 upstream (or the next trunk, if this one never answered at all), but the
        transaction lingers as completed: a late non-2xx final is then ACKed and absorbed (not
        relayed on top of our 408), a late 2xx still goes end to end."""
        self.counters["timeouts"] += 1
        if client.probe is not None:
            self._actions.append(ProbeResult(client.probe, None))
        silent = client.state in (State.CALLING, State.TRYING)
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = next_state(client.machine, client.state, Input.TIMEOUT)
        self._timers.arm(client.key, Timer.D, now + TIMER_D)
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
            self._timers.cancel(client.key, Timer.A)
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

    def _server_timer(self, server: ServerTransaction, timer: Timer, now: float) -> None:
        if timer is Timer.G and server.state is State.COMPLETED and server.last_response:
            self._reply(server, server.last_response)
            server.retransmit_interval = min(server.retransmit_interval * 2, T2)
            self._timers.arm(server.key, Timer.G, now + server.retransmit_interval)
            return
        self._timers.cancel_all(server.key, SERVER_TIMERS)
        server.state = State.TERMINATED
        self._servers.pop(server.key, None)
        self._pending.discard(server.key)
        client = self._clients.get(server.client_key) if server.client_key else None
        if client is not None and client.state is State.TERMINATED:
            self._clients.pop(client.key, None)


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
    """The ACK a proxy sends itself for a non-2xx final (RFC 3261 17.1.1.3): its To is the
    response's, as the next hop sent it (the restore is for the copy going upstream)."""
    assert client.sent is not None
    to_header = response.wire.one("to")
    return hop_request(
        client.sent, "ACK", response.raw[to_header.value_start : to_header.value_end]
    )


# ----------------------------------------------------------------- CANCEL and ACK from fields
def hop_request(sent: SentRequest, method: str, to_value: bytes | None = None) -> bytes:
    """CANCEL (RFC 3261 9.1) or ACK for a non-2xx (17.1.1.3) for a request we forwarded: its
    Request-URI, top Via (ours), Route set, From, Call-ID, To and CSeq number as sent, read from
    the incoming message with our edits applied to those spans only (the sent bytes are never
    parsed again)."""
    wire = sent.wire
    request_line = _edited_span(wire.raw, sent.edits, 0, wire.raw.index(b"\n") + 1)
    uri = request_line.split(b" ", 2)[1]
    lines = [method.encode() + b" " + uri + b" SIP/2.0\r\n", b"Via: " + sent.via + b"\r\n"]
    for header in wire.get_all("route"):
        value = _edited_value(wire.raw, sent.edits, header)
        if value:
            lines.append(b"Route: " + value + b"\r\n")
    lines.append(b"Max-Forwards: 70\r\n")
    for name, label in (("from", b"From"), ("call-id", b"Call-ID")):
        found = wire.get(name)
        if found is not None:
            lines.append(label + b": " + _edited_value(wire.raw, sent.edits, found) + b"\r\n")
    to_header = wire.get("to")
    if to_value is None and to_header is not None:
        to_value = _edited_value(wire.raw, sent.edits, to_header)
    cseq = wire.get("cseq")
    number = wire.raw[cseq.value_start : cseq.value_end].split()[0] if cseq else b"1"
    lines.append(b"To: " + (to_value or b"") + b"\r\n")
    lines.append(b"CSeq: " + number + b" " + method.encode() + b"\r\n")
    lines.append(b"Content-Length: 0\r\n\r\n")
    return b"".join(lines)


def _edited_span(raw: bytes, edits: tuple[Edit, ...], start: int, end: int) -> bytes:
    """raw[start:end] with the edits inside it applied (insertions at its edges are other
    header lines, not part of it)."""
    inside = [
        e
        for e in edits
        if start <= e.start and e.end <= end and not (e.start == e.end and e.start in (start, end))
    ]
    if not inside:
        return raw[start:end]
    pieces: list[bytes] = []
    position = start
    for edit in sorted(inside, key=lambda e: (e.start, e.end)):
        pieces += [raw[position : edit.start], edit.data]
        position = edit.end
    pieces.append(raw[position:end])
    return b"".join(pieces)


def _edited_value(raw: bytes, edits: tuple[Edit, ...], header: Header) -> bytes:
    """A header's value as sent: its whole line(s) edited, then the value after the colon; empty
    when the edits removed the header."""
    line = _edited_span(raw, edits, header.start, header.end)
    if b":" not in line:
        return b""
    return line.split(b":", 1)[1].strip()

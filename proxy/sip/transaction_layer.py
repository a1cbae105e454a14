"""The transaction layer (Kamailio's tm): server and client transactions, their state machines
and RFC 3261 timers. It decides *when* something is sent or absorbed; the proxy core decides
*what* a forwarded message looks like and hands that in (`upstream`, `relay_stateless`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import cast

from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.parse import Message, parse_message
from proxy.sip.responses import build_hop_request, build_response
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
    TimerQueue,
)
from proxy.sip.transactions import (
    ClientTransaction,
    Restore,
    ServerKey,
    ServerTransaction,
    State,
    server_key,
)

log = logging.getLogger("callerid_proxy.transactions")

CLIENT_TIMERS = ("A", "B", "C", "D", "E", "F", "K")
FAILOVER_STATUSES = frozenset((408, 500, 502, 503, 504))
SERVER_TIMERS = ("G", "H", "I", "J", "L")
UpstreamBytes = Callable[[Message, Restore | None], bytes | None]
RelayStateless = Callable[[Message], None]


class TransactionLayer:
    def __init__(
        self,
        outbox: list[Outgoing],
        counters: Counter[str],
        upstream: UpstreamBytes,
        relay_stateless: RelayStateless,
    ) -> None:
        self._outbox = outbox
        self._counters = counters
        self._upstream = upstream  # a response as it must go upstream, or None to drop it
        self._relay_stateless = relay_stateless
        self._timers = TimerQueue()
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._clients: dict[tuple[str, str], ClientTransaction] = {}

    @property
    def count(self) -> int:
        return len(self._servers) + len(self._clients)

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    # ----------------------------------------------------------------- server side
    def absorb(self, msg: Message, now: float) -> bool:
        """A retransmitted request (answered with the last response) or the ACK of a non-2xx
        final (RFC 3261 17.2.1): the transaction owns it and nothing goes further."""
        if msg.method == "ACK":
            server = self._servers.get(server_key(msg, "INVITE"))
            if server is None or server.state not in (State.COMPLETED, State.CONFIRMED):
                return False  # an ACK for a 2xx is its own end-to-end transaction
            if server.state is State.COMPLETED:
                server.state = State.CONFIRMED
                self._timers.cancel_all(server.key, ("G", "H"))
                self._timers.arm(server.key, "I", now + (0 if _reliable(server) else T4))
            self._counters["ack_absorbed"] += 1
            return True
        server = self._servers.get(server_key(msg))
        if server is None:
            return False
        self._counters["retransmissions_absorbed"] += 1
        if server.last_response is not None and server.state is not State.ACCEPTED:
            self._reply(server, server.last_response)
        return True

    def open_server(self, msg: Message, source: Source) -> ServerTransaction:
        server = ServerTransaction(
            key=server_key(msg), method=msg.method, source=source, request=msg
        )
        self._servers[server.key] = server
        if msg.method == "INVITE":
            server.last_response = build_response(msg.wire, 100, "Trying")
            self._reply(server, server.last_response)
        return server

    def invite_server_for_cancel(self, cancel: Message) -> ServerTransaction | None:
        invite = self._servers.get(server_key(cancel, "INVITE"))
        return invite if invite is not None and invite.client is not None else None

    def cancel(
        self, invite: ServerTransaction, cancel: Message, source: Source, now: float
    ) -> None:
        """Hop-by-hop CANCEL (RFC 3261 16.10): 200 here, CANCEL downstream once it may be sent."""
        invite.cancelled = True  # no failover to another trunk after this
        cancel_server = ServerTransaction(server_key(cancel), "CANCEL", source, cancel)
        self._servers[cancel_server.key] = cancel_server
        self._send_final(cancel_server, build_response(cancel.wire, 200, "OK"), now)
        client = invite.client
        assert client is not None
        if client.state is State.PROCEEDING:
            self._send_cancel(client, now)
        elif client.state is State.TRYING:
            client.cancel_pending = True  # RFC 3261 9.1: wait for a provisional response

    def _reply(self, server: ServerTransaction, data: bytes) -> None:
        source = server.source
        self._outbox.append(Outgoing(data, source.reply_target(), source.connection))

    def _send_final(self, server: ServerTransaction, data: bytes, now: float) -> None:
        server.last_response = data
        server.final_sent = True
        self._reply(server, data)
        status = int(data[8:11])
        if server.method == "INVITE" and 200 <= status < 300:
            server.state = State.ACCEPTED  # RFC 6026
            self._timers.arm(server.key, "L", now + TIMER_L)
        elif server.method == "INVITE":
            server.state = State.COMPLETED
            if not _reliable(server):
                server.retransmit_interval = T1
                self._timers.arm(server.key, "G", now + T1)
            self._timers.arm(server.key, "H", now + TIMER_H)
        else:
            server.state = State.COMPLETED
            self._timers.arm(server.key, "J", now + (0 if _reliable(server) else TIMER_J))

    # ----------------------------------------------------------------- client side
    def start_client(self, client: ClientTransaction, now: float) -> None:
        if client.server is not None:
            client.server.client = client
        self._clients[client.key] = client
        self._counters["forwarded"] += 1
        self._outbox.append(Outgoing(client.request, client.target))
        if not client.reliable:
            client.retransmit_interval = T1
            self._timers.arm(client.key, "A" if client.method == "INVITE" else "E", now + T1)
        if client.method == "INVITE":
            self._timers.arm(client.key, "B", now + TIMER_B)
        else:
            self._timers.arm(client.key, "F", now + TIMER_F)

    def client_for(self, branch: str, method: str) -> ClientTransaction | None:
        return self._clients.get((branch, method))

    def on_response(self, client: ClientTransaction, msg: Message, now: float) -> None:
        if msg.wire.status < 200:
            self._on_provisional(client, msg, now)
        else:
            self._on_final(client, msg, now)

    def _send_cancel(self, invite: ClientTransaction, now: float) -> None:
        sent = parse_message(invite.request, datagram=True).wire
        cancel = ClientTransaction(
            branch=invite.branch,
            method="CANCEL",
            target=invite.target,
            request=build_hop_request(sent, "CANCEL"),
            server=None,
        )
        invite.cancel_pending = False
        self.start_client(cancel, now)

    def _on_provisional(self, client: ClientTransaction, msg: Message, now: float) -> None:
        if client.state is State.TRYING:
            client.state = State.PROCEEDING
            self._timers.cancel_all(client.key, ("A", "B"))
            if client.method == "INVITE":
                self._timers.arm(client.key, "C", now + TIMER_C)
            elif not client.reliable:
                client.retransmit_interval = T2
        elif (
            client.method == "INVITE"
            and msg.wire.status > 100
            and self._timers.is_armed(client.key, "C")
        ):
            self._timers.arm(client.key, "C", now + TIMER_C)  # RFC 3261 16.7 step 2: reset
        if client.cancel_pending:
            self._send_cancel(client, now)
        if msg.wire.status == 100 or client.server is None:
            return  # 100 Trying is hop by hop; we sent our own
        self._relay_to_server(client, msg, now)

    def _on_final(self, client: ClientTransaction, msg: Message, now: float) -> None:
        status = msg.wire.status
        if client.state in (State.COMPLETED, State.TERMINATED):
            if client.method == "INVITE" and status >= 300:
                self._outbox.append(Outgoing(_ack_for(client, msg), client.target))
            elif client.method == "INVITE":
                self._relay_stateless(msg)  # 2xx retransmission: end to end
            return
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        if client.method == "INVITE" and status >= 300:
            self._outbox.append(Outgoing(_ack_for(client, msg), client.target))
            client.state = State.COMPLETED
            self._timers.arm(client.key, "D", now + (0 if client.reliable else TIMER_D))
        elif client.method == "INVITE":
            self._end_client(client)
        else:
            client.state = State.COMPLETED
            self._timers.arm(client.key, "K", now + (0 if client.reliable else T4))
        if client.server is None:
            return
        if status in FAILOVER_STATUSES and self._try_next_hop(client.server, now):
            return  # this trunk's failure is not the caller's answer: the next trunk's will be
        self._relay_to_server(client, msg, now)

    def _relay_to_server(self, client: ClientTransaction, msg: Message, now: float) -> None:
        server = client.server
        assert server is not None
        status = msg.wire.status
        late_2xx = server.final_sent and server.method == "INVITE" and 200 <= status < 300
        if server.final_sent and not late_2xx:
            return  # upstream already has its final answer (e.g. our own 408)
        data = self._upstream(msg, client.restore)
        if data is None:
            if status >= 200 and not late_2xx:  # unrelayable final: still end the transaction
                self._answer_upstream(client, 502, "Bad Gateway", now)
            return
        if late_2xx:  # RFC 3261 16.7 step 5: a 2xx goes upstream even after our own final
            self._counters["responses_relayed"] += 1
            self._reply(server, data)
            return
        self._counters["responses_relayed"] += 1
        if msg.wire.status < 200:
            server.last_response = data
            self._reply(server, data)
        else:
            self._send_final(server, data, now)

    def _end_client(self, client: ClientTransaction) -> None:
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = State.TERMINATED
        self._clients.pop(client.key, None)

    def _answer_upstream(
        self, client: ClientTransaction, status: int, reason: str, now: float
    ) -> None:
        """No usable answer downstream: the proxy answers upstream itself (RFC 3261 16.7/16.8)."""
        server = client.server
        if server is None or server.final_sent:
            return
        target = client.target
        log.warning(
            "%s %s toward %s: answering %d",
            client.method,
            reason.lower(),
            target.hostport(),
            status,
        )
        self._send_final(server, build_response(server.request.wire, status, reason), now)

    # ----------------------------------------------------------------- failures and timers
    def transport_failed(self, target: Target, now: float) -> None:
        """The adapter could not reach `target` (RFC 3261 8.1.3.1, 16.7 step 4): 503 upstream."""
        for client in [c for c in self._clients.values() if c.target == target]:
            if client.state in (State.TRYING, State.PROCEEDING) and client.method != "CANCEL":
                self._counters["transport_failures"] += 1
                self._end_client(client)
                if client.server is None or not self._try_next_hop(client.server, now):
                    self._answer_upstream(client, 503, "Service Unavailable", now)

    def handle_timer(self, now: float) -> None:
        for owner, name in self._timers.pop_due(now):
            # Client keys are (branch, method); server keys are longer tuples: no collision.
            client = self._clients.get(cast(tuple[str, str], owner))
            server = self._servers.get(cast(ServerKey, owner))
            if client is not None:
                self._client_timer(client, name, now)
            elif server is not None:
                self._server_timer(server, name, now)

    def _client_timer(self, client: ClientTransaction, name: str, now: float) -> None:
        if name in ("A", "E"):
            self._retransmit(client, name, now)
        elif name in ("B", "F"):
            self._time_out(client, now)
        elif name == "C":
            # RFC 3261 16.8: CANCEL downstream and answer 408 upstream ourselves; the client
            # transaction stays to ACK the 487 that the CANCEL brings (Timer B bounds the wait).
            self._counters["timeouts"] += 1
            self._send_cancel(client, now)
            self._answer_upstream(client, 408, "Request Timeout", now)
            self._timers.arm(client.key, "B", now + TIMER_B)
        else:  # D, K: the transaction has absorbed its retransmissions
            self._end_client(client)

    def _retransmit(self, client: ClientTransaction, name: str, now: float) -> None:
        """Timer A doubles without bound (Timer B ends it); Timer E is capped at T2, and stays
        at T2 once a provisional arrived (RFC 3261 17.1.2.2)."""
        self._counters["retransmissions_sent"] += 1
        self._outbox.append(Outgoing(client.request, client.target))
        interval = client.retransmit_interval * 2
        if name == "E":
            interval = T2 if client.state is State.PROCEEDING else min(interval, T2)
        client.retransmit_interval = interval
        self._timers.arm(client.key, name, now + interval)

    def _time_out(self, client: ClientTransaction, now: float) -> None:
        """408 upstream (or the next trunk, if this one never answered at all), but the
        transaction lingers as completed: a late non-2xx final is then ACKed and absorbed (not
        relayed on top of our 408), a late 2xx still goes end to end."""
        self._counters["timeouts"] += 1
        silent = client.state is State.TRYING
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = State.COMPLETED
        self._timers.arm(client.key, "D", now + TIMER_D)
        server = client.server
        if not (silent and server is not None and self._try_next_hop(server, now)):
            self._answer_upstream(client, 408, "Request Timeout", now)

    def _try_next_hop(self, server: ServerTransaction, now: float) -> bool:
        """Failover (like Kamailio's dispatcher): the same request, built anew for the next
        trunk, as a new client transaction; never after a CANCEL or a final upstream."""
        if server.cancelled or server.final_sent or not server.alternatives:
            return False
        if server.retarget is None:
            return False
        target = server.alternatives.pop(0)
        server.attempt += 1
        failed = server.client.target.hostport() if server.client else "?"
        log.warning("%s: %s failed, trying %s", server.method, failed, target.hostport())
        self._counters["failovers"] += 1
        self.start_client(server.retarget(target, server.attempt), now)
        return True

    def _server_timer(self, server: ServerTransaction, name: str, now: float) -> None:
        if name == "G" and server.state is State.COMPLETED and server.last_response:
            self._reply(server, server.last_response)
            server.retransmit_interval = min(server.retransmit_interval * 2, T2)
            self._timers.arm(server.key, "G", now + server.retransmit_interval)
            return
        self._timers.cancel_all(server.key, SERVER_TIMERS)
        server.state = State.TERMINATED
        self._servers.pop(server.key, None)
        client = server.client
        if client is not None and client.state is State.TERMINATED:
            self._clients.pop(client.key, None)


def _reliable(server: ServerTransaction) -> bool:
    return server.source.transport != "udp"


def _ack_for(client: ClientTransaction, response: Message) -> bytes:
    """The ACK a proxy sends itself for a non-2xx final (RFC 3261 17.1.1.3): its To is the
    response's, as the next hop sent it (the restore is for the copy going upstream)."""
    sent = parse_message(client.request, datagram=True).wire
    to_header = response.wire.one("to")
    return build_hop_request(sent, "ACK", response.raw[to_header.value_start : to_header.value_end])

"""The proxy core: bytes, source and `now` in; bytes to send and the next timer out. No I/O.

The path of an outbound INVITE: parse -> transaction match -> classify by source -> caller-ID
decision -> edits (From, PAI, Via, Record-Route with the signed identity, Max-Forwards) ->
applied to the original bytes -> client transaction -> the adapter sends and arms `get_timer()`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter

from proxy.sip import requests as request_edits
from proxy.sip.addresses import Outgoing, Source, Target, is_unroutable_destination
from proxy.sip.caller_id import ShownIdentity, replace_identity_header, rewrite_caller_id
from proxy.sip.edits import Edit, apply_edits, remove_via_value
from proxy.sip.errors import (
    BadExtension,
    BadRequest,
    Forbidden,
    SipError,
    TooManyHops,
    UnparseableMessage,
    UnsupportedUriScheme,
)
from proxy.sip.grammar import parse_sip_uri, uri_scheme
from proxy.sip.identity import DialogIdentity
from proxy.sip.parse import Message, lenient_split, parse_message
from proxy.sip.policy import CallerIdPolicy, ProxyConfig
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
    OUR_BRANCH_PREFIX,
    ClientTransaction,
    Restore,
    ServerTransaction,
    State,
    outgoing_branch,
    server_key,
)

log = logging.getLogger("callerid_proxy.core")

PBX, TRUNK = "pbx", "trunk"
ROUTABLE_SCHEMES = ("sip", "sips", "tel")
DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER")
CLIENT_TIMERS = ("A", "B", "C", "D", "E", "F", "K")
SERVER_TIMERS = ("G", "H", "I", "J", "L")


class ProxyCore:
    def __init__(self, config: ProxyConfig, policy: CallerIdPolicy) -> None:
        self.config = config
        self.policy = policy
        self.counters: Counter[str] = Counter()
        self._outbox: list[Outgoing] = []
        self._timers = TimerQueue()
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._clients: dict[tuple[str, str], ClientTransaction] = {}

    # ----------------------------------------------------------------- adapter interface
    def receive(self, data: bytes, source: Source, now: float) -> None:
        """One datagram, or one framed stream message, from `source`."""
        self.counters["received"] += 1
        try:
            msg = parse_message(data, datagram=source.transport == "udp")
        except SipError as error:
            self._refuse_unparsed(data, source, error)
            return
        try:
            if msg.wire.trailing_bytes:
                self._drop(
                    f"{msg.wire.trailing_bytes} octets after the message ignored", count=False
                )
            if msg.is_request:
                self._on_request(msg, source, now)
            else:
                self._on_response(msg, source, now)
        except SipError as error:
            self._refuse(msg, source, error)

    def receive_broken_stream(self, head: bytes, reason: str, source: Source) -> None:
        """A stream message that could not be framed: answer 400 if possible; the adapter closes."""
        error = BadRequest(reason)
        self._refuse_unparsed(head, source, error, close_after=True)

    def datagrams_to_send(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        for owner, name in self._timers.pop_due(now):
            if isinstance(owner, tuple) and len(owner) == 2 and owner in self._clients:
                self._client_timer(self._clients[owner], name, now)
            elif owner in self._servers:
                self._server_timer(self._servers[owner], name, now)

    def transport_failed(self, target: Target, now: float) -> None:
        """The adapter could not reach `target` (RFC 3261 8.1.3.1, 16.7 step 4): 503 upstream."""
        for client in [c for c in self._clients.values() if c.target == target]:
            if client.state in (State.TRYING, State.PROCEEDING) and client.method != "CANCEL":
                self.counters["transport_failures"] += 1
                self._fail_client(client, 503, "Service Unavailable", now)

    @property
    def transaction_count(self) -> int:
        return len(self._servers) + len(self._clients)

    # ----------------------------------------------------------------- refusals and drops
    def _drop(self, reason: str, *, count: bool = True) -> None:
        if count:
            self.counters["dropped"] += 1
        log.warning("dropped: %s", reason)

    def _refuse_unparsed(
        self, data: bytes, source: Source, error: SipError, *, close_after: bool = False
    ) -> None:
        wire = getattr(error, "wire", None) or lenient_split(data)
        if isinstance(error, UnparseableMessage) or wire is None or not wire.is_request:
            self._drop(f"unparseable message from {source.host}:{source.port}: {error.detail}")
            if close_after:
                self._outbox.append(Outgoing(b"", source.reply_target(), source.connection, True))
            return
        self._send_error(wire.method or "", wire, source, error, close_after=close_after)

    def _refuse(self, msg: Message, source: Source, error: SipError) -> None:
        if not msg.is_request:
            self._drop(f"response from {source.host}:{source.port}: {error.detail}")
            return
        self._send_error(msg.method, msg.wire, source, error)

    def _send_error(
        self,
        method: str,
        wire: object,
        source: Source,
        error: SipError,
        *,
        close_after: bool = False,
    ) -> None:
        from proxy.sip.message import SipMessage

        assert isinstance(wire, SipMessage)
        self.counters[f"refused_{error.status_code}"] += 1
        log.warning(
            "refused %s from %s:%s with %d: %s",
            method[:32],
            source.host,
            source.port,
            error.status_code,
            error.detail,
        )
        if method == "ACK" or not wire.get_all("via"):
            return  # an ACK is never answered (RFC 3261 17.2.1); no Via, nowhere to answer
        response = build_response(wire, error.status_code, error.reason, error.extra_headers)
        self._outbox.append(
            Outgoing(response, source.reply_target(), source.connection, close_after)
        )

    # ----------------------------------------------------------------- classification
    def _side_of(self, source: Source) -> str | None:
        """Trunk first: PBX and trunk may share an IP address."""
        trunk, pbx, dialled = self.config.trunk, self.config.pbx, source.dialled
        if dialled is not None and self.config.is_trunk(dialled.host, dialled.port):
            return TRUNK
        if self.config.is_trunk(source.host, source.port):
            return TRUNK
        if dialled == pbx or source.host == pbx.host:
            return PBX
        if self.config.trusted:
            address = ipaddress.ip_address(source.host)
            if any(address in network for network in self.config.trusted):
                return PBX
        if source.transport == "tcp" and source.host == trunk.host:
            return TRUNK
        return None

    # ----------------------------------------------------------------- requests
    def _on_request(self, msg: Message, source: Source, now: float) -> None:
        if self._absorbed_by_server_transaction(msg, source, now):
            return
        side = self._side_of(source)
        if side is None:
            if msg.method == "ACK":
                self._drop(f"ACK from unknown source {source.host}:{source.port}")
                return
            raise Forbidden(f"source {source.host}:{source.port} is neither the PBX nor the trunk")
        if msg.method == "CANCEL":
            self._on_cancel(msg, source, side, now)
            return
        self._check_forwardable(msg)
        target = self.config.trunk if side == PBX else self.config.pbx
        edits, restore = self._routing_edits(msg, source, side, target)
        if msg.method == "ACK":
            self._forward_stateless(msg, source, target, edits, now)
            return
        self._forward_stateful(msg, source, target, edits, restore, now)

    def _absorbed_by_server_transaction(self, msg: Message, source: Source, now: float) -> bool:
        if msg.method == "ACK":
            server = self._servers.get(server_key(msg, "INVITE"))
            if server is None or server.state not in (State.COMPLETED, State.CONFIRMED):
                return False  # an ACK for a 2xx is its own end-to-end transaction
            if server.state is State.COMPLETED:
                server.state = State.CONFIRMED
                self._timers.cancel_all(server.key, ("G", "H"))
                self._timers.arm(server.key, "I", now + (0 if self._reliable(server) else T4))
            self.counters["ack_absorbed"] += 1
            return True
        server = self._servers.get(server_key(msg))
        if server is None:
            return False
        self.counters["retransmissions_absorbed"] += 1
        if server.last_response is not None and server.state is not State.ACCEPTED:
            self._reply(server, server.last_response)
        return True

    def _check_forwardable(self, msg: Message) -> None:
        """RFC 3261 16.3 request validation a proxy must do before forwarding."""
        scheme = uri_scheme(msg.wire.uri)
        if scheme not in ROUTABLE_SCHEMES:
            raise UnsupportedUriScheme(f"cannot route a {scheme!r} Request-URI")
        if scheme != "tel" and parse_sip_uri(msg.wire.uri).has_headers:
            raise BadRequest("Request-URI carries URI headers ('?'), which a request must not")
        if msg.max_forwards == 0 and msg.method != "ACK":
            raise TooManyHops("Max-Forwards reached 0")
        unsupported = request_edits.proxy_require_options(msg)
        if unsupported:
            joined = ", ".join(unsupported)
            raise BadExtension(
                f"unsupported Proxy-Require: {joined}", extra_headers=(("Unsupported", joined),)
            )

    def _routing_edits(
        self, msg: Message, source: Source, side: str, target: Target
    ) -> tuple[list[Edit], Restore | None]:
        """Everything but Via: identity rewrite/restore, Route, Record-Route, Max-Forwards."""
        edits = request_edits.max_forwards_edits(msg)
        edits += request_edits.content_length_edits(msg, target)
        if msg.to_addr.tag is not None:
            routes, identity = request_edits.pop_our_routes(msg, self.config)
            edits += routes
            identity_edits, restore = self._in_dialog_identity(msg, side, identity)
            return edits + identity_edits, restore
        token_identity: DialogIdentity | None = None
        restore = None
        if side == PBX and msg.method == "INVITE":
            shown = self._decide_caller_id(msg)
            rewrite, token_identity = rewrite_caller_id(msg, shown, target.uri_host())
            edits += rewrite
            restore = Restore("from", token_identity.original_from)
        if msg.method in DIALOG_CREATING:
            edits += request_edits.record_route_edits(
                msg, self.config, source.transport, target.transport, token_identity
            )
        return edits, restore

    def _in_dialog_identity(
        self, msg: Message, side: str, identity: DialogIdentity | None
    ) -> tuple[list[Edit], Restore | None]:
        if identity is None:
            return [], None
        if side == PBX:
            edits = replace_identity_header(msg, "from", identity.rewritten_from)
            return edits, Restore("from", identity.original_from)
        edits = replace_identity_header(msg, "to", identity.original_from)
        return edits, Restore("to", identity.rewritten_from)

    def _decide_caller_id(self, msg: Message) -> ShownIdentity:
        user = request_edits.uri_user(msg.from_addr.uri)
        destination = request_edits.uri_user(msg.wire.uri)
        decision = self.policy.decide(user, destination)
        self.counters["caller_id_decisions"] += 1
        log.info(
            "call-id=%s user=%s destination=%s shown=%s reason=%r rules=%s",
            msg.call_id,
            user,
            destination,
            decision.number,
            decision.reason,
            decision.rules_version,
        )
        return ShownIdentity(decision.number, decision.name)

    def _via_edits(self, msg: Message, source: Source, target: Target, branch: str) -> list[Edit]:
        ours = self.config.advertised_for(target.transport, target.host)
        return request_edits.via_edits(msg, source, ours, branch)

    def _forward_stateless(
        self, msg: Message, source: Source, target: Target, edits: list[Edit], now: float
    ) -> None:
        del now
        branch = outgoing_branch(server_key(msg), target.transport)
        data = apply_edits(
            msg.raw, self._via_edits(msg, source, target, branch) + edits, msg.wire.body_end
        )
        self.counters["forwarded_stateless"] += 1
        self._outbox.append(Outgoing(data, target))

    def _forward_stateful(
        self,
        msg: Message,
        source: Source,
        target: Target,
        edits: list[Edit],
        restore: Restore | None,
        now: float,
    ) -> None:
        key = server_key(msg)
        server = ServerTransaction(key=key, method=msg.method, source=source, request=msg)
        self._servers[key] = server
        if msg.method == "INVITE":
            trying = build_response(msg.wire, 100, "Trying")
            server.last_response = trying
            self._reply(server, trying)
        branch = outgoing_branch(key, target.transport)
        data = apply_edits(
            msg.raw, self._via_edits(msg, source, target, branch) + edits, msg.wire.body_end
        )
        client = ClientTransaction(
            branch=branch,
            method=msg.method,
            target=target,
            request=data,
            server=server,
            restore=restore,
            created_at=now,
        )
        server.client = client
        self._start_client(client, now)

    def _start_client(self, client: ClientTransaction, now: float) -> None:
        self._clients[client.key] = client
        self.counters["forwarded"] += 1
        self._outbox.append(Outgoing(client.request, client.target))
        if not client.reliable:
            client.retransmit_interval = T1
            self._timers.arm(client.key, "A" if client.method == "INVITE" else "E", now + T1)
        timeout_name = "B" if client.method == "INVITE" else "F"
        self._timers.arm(
            client.key, timeout_name, now + (TIMER_B if timeout_name == "B" else TIMER_F)
        )

    # ----------------------------------------------------------------- CANCEL
    def _on_cancel(self, msg: Message, source: Source, side: str, now: float) -> None:
        invite = self._servers.get(server_key(msg, "INVITE"))
        if invite is None or invite.client is None:
            target = self.config.trunk if side == PBX else self.config.pbx
            self._forward_stateless(msg, source, target, request_edits.max_forwards_edits(msg), now)
            return
        cancel_server = ServerTransaction(server_key(msg), "CANCEL", source, msg)
        self._servers[cancel_server.key] = cancel_server
        self._send_final(cancel_server, build_response(msg.wire, 200, "OK"), now)
        client = invite.client
        if client.state is State.PROCEEDING:
            self._send_cancel(client, now)
        elif client.state is State.TRYING:
            client.cancel_pending = True  # RFC 3261 9.1: wait for a provisional response

    def _send_cancel(self, invite: ClientTransaction, now: float) -> None:
        sent = parse_message(invite.request, datagram=True).wire
        cancel = ClientTransaction(
            branch=invite.branch,
            method="CANCEL",
            target=invite.target,
            request=build_hop_request(sent, "CANCEL"),
            server=None,
            created_at=now,
        )
        invite.cancel_pending = False
        self._start_client(cancel, now)

    # ----------------------------------------------------------------- responses
    def _on_response(self, msg: Message, source: Source, now: float) -> None:
        if self._side_of(source) is None:
            self._drop(f"response from unknown source {source.host}:{source.port}")
            return
        top = msg.vias[0]
        if not (top.branch or "").startswith(OUR_BRANCH_PREFIX) or not self._is_ours(top.host):
            self._drop(f"response whose top Via is not ours ({top.sent_by})")
            return
        client = self._clients.get((top.branch or "", msg.cseq_method))
        if client is None:
            self._relay_stateless(msg)
            return
        if msg.wire.status < 200:
            self._client_provisional(client, msg, now)
        else:
            self._client_final(client, msg, now)

    def _is_ours(self, host: str) -> bool:
        return any(host.strip("[]") == target.host for target in self.config.advertised)

    def _client_provisional(self, client: ClientTransaction, msg: Message, now: float) -> None:
        if client.state is State.TRYING:
            client.state = State.PROCEEDING
            self._timers.cancel_all(client.key, ("A", "B"))
            if client.method == "INVITE":
                self._timers.arm(client.key, "C", now + TIMER_C)
            elif not client.reliable:
                client.retransmit_interval = T2
        if client.cancel_pending:
            self._send_cancel(client, now)
        if msg.wire.status == 100 or client.server is None:
            return  # 100 Trying is hop by hop; we sent our own
        self._relay_to_server(client, msg, now)

    def _client_final(self, client: ClientTransaction, msg: Message, now: float) -> None:
        status = msg.wire.status
        if client.state in (State.COMPLETED, State.TERMINATED):
            if client.method == "INVITE" and status >= 300:
                self._outbox.append(Outgoing(self._ack_for(client, msg), client.target))
            elif client.method == "INVITE":
                self._relay_stateless(msg)  # 2xx retransmission: end to end
            return
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        if client.method == "INVITE" and status >= 300:
            self._outbox.append(Outgoing(self._ack_for(client, msg), client.target))
            client.state = State.COMPLETED
            self._timers.arm(client.key, "D", now + (0 if client.reliable else TIMER_D))
        elif client.method == "INVITE":
            self._end_client(client)
        else:
            client.state = State.COMPLETED
            self._timers.arm(client.key, "K", now + (0 if client.reliable else T4))
        if client.server is not None:
            self._relay_to_server(client, msg, now)

    def _ack_for(self, client: ClientTransaction, response: Message) -> bytes:
        sent = parse_message(client.request, datagram=True).wire
        to_header = response.wire.one("to")
        to_value = response.raw[to_header.value_start : to_header.value_end]
        if client.restore is not None and client.restore.header == "to":
            to_value = client.restore.value
        return build_hop_request(sent, "ACK", to_value)

    def _upstream_bytes(self, msg: Message, restore: Restore | None) -> bytes:
        edits = [remove_via_value(msg.wire, msg.vias, msg.vias[0])]
        if restore is not None:
            edits += replace_identity_header(msg, restore.header, restore.value)
        return apply_edits(msg.raw, edits, msg.wire.body_end)

    def _relay_to_server(self, client: ClientTransaction, msg: Message, now: float) -> None:
        server = client.server
        assert server is not None
        if server.final_sent:
            return  # upstream already has its final answer (e.g. our own 408)
        if len(msg.vias) < 2:
            self._drop("response with only our Via: nowhere to relay")
            return
        data = self._upstream_bytes(msg, client.restore)
        self.counters["responses_relayed"] += 1
        if msg.wire.status < 200:
            server.last_response = data
            self._reply(server, data)
        else:
            self._send_final(server, data, now)

    def _relay_stateless(self, msg: Message) -> None:
        """No transaction (2xx retransmission, restart): restore from our Record-Route token."""
        if len(msg.vias) < 2:
            self._drop("response with only our Via: nowhere to relay")
            return
        upstream = msg.vias[1]
        host = upstream.params.get("received") or upstream.host
        rport = upstream.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else upstream.port or 5060
        if is_unroutable_destination(host):
            self._drop(f"response toward unroutable address {host}")
            return
        restore = request_edits.restore_from_record_route(msg, self.config)
        transport = "udp" if upstream.transport == "UDP" else "tcp"
        self.counters["responses_relayed_stateless"] += 1
        self._outbox.append(
            Outgoing(self._upstream_bytes(msg, restore), Target(transport, host.strip("[]"), port))
        )

    # ----------------------------------------------------------------- server side sending
    def _reply(self, server: ServerTransaction, data: bytes) -> None:
        source = server.source
        self._outbox.append(Outgoing(data, source.reply_target(), source.connection))

    def _reliable(self, server: ServerTransaction) -> bool:
        return server.source.transport != "udp"

    def _send_final(self, server: ServerTransaction, data: bytes, now: float) -> None:
        server.last_response = data
        server.final_sent = True
        self._reply(server, data)
        status = int(data[8:11])
        if server.method == "INVITE" and 200 <= status < 300:
            server.state = State.ACCEPTED
            self._timers.arm(server.key, "L", now + TIMER_L)
        elif server.method == "INVITE":
            server.state = State.COMPLETED
            if not self._reliable(server):
                server.retransmit_interval = T1
                self._timers.arm(server.key, "G", now + T1)
            self._timers.arm(server.key, "H", now + TIMER_H)
        else:
            server.state = State.COMPLETED
            self._timers.arm(server.key, "J", now + (0 if self._reliable(server) else TIMER_J))

    # ----------------------------------------------------------------- timers
    def _client_timer(self, client: ClientTransaction, name: str, now: float) -> None:
        if name in ("A", "E"):
            self.counters["retransmissions_sent"] += 1
            self._outbox.append(Outgoing(client.request, client.target))
            cap = T2 if name == "E" or client.method != "INVITE" else float("inf")
            client.retransmit_interval = min(client.retransmit_interval * 2, cap)
            if client.state is State.PROCEEDING and name == "E":
                client.retransmit_interval = T2
            self._timers.arm(client.key, name, now + client.retransmit_interval)
        elif name in ("B", "F"):
            self._time_out_client(client, now)
        elif name == "C":
            # RFC 3261 16.8: CANCEL downstream and answer 408 upstream ourselves; the client
            # transaction stays to ACK the 487 that the CANCEL brings (Timer B bounds the wait).
            self.counters["timeouts"] += 1
            self._send_cancel(client, now)
            self._answer_upstream(client, 408, "Request Timeout", now)
            self._timers.arm(client.key, "B", now + TIMER_B)
        else:  # D, K: the transaction has absorbed its retransmissions
            self._end_client(client)

    def _time_out_client(self, client: ClientTransaction, now: float) -> None:
        """408 upstream, but the transaction lingers as completed: a late non-2xx final is then
        ACKed and absorbed (not relayed on top of our 408), a late 2xx still goes end to end."""
        self.counters["timeouts"] += 1
        self._answer_upstream(client, 408, "Request Timeout", now)
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = State.COMPLETED
        self._timers.arm(client.key, "D", now + TIMER_D)

    def _fail_client(self, client: ClientTransaction, status: int, reason: str, now: float) -> None:
        """No usable answer downstream: the proxy answers upstream itself (RFC 3261 16.7/16.8)."""
        self._end_client(client)
        self._answer_upstream(client, status, reason, now)

    def _answer_upstream(
        self, client: ClientTransaction, status: int, reason: str, now: float
    ) -> None:
        server = client.server
        if server is None or server.final_sent:
            return
        log.warning(
            "%s %s toward %s:%s: answering %d",
            client.method,
            reason.lower(),
            client.target.host,
            client.target.port,
            status,
        )
        self._send_final(server, build_response(server.request.wire, status, reason), now)

    def _end_client(self, client: ClientTransaction) -> None:
        self._timers.cancel_all(client.key, CLIENT_TIMERS)
        client.state = State.TERMINATED
        self._clients.pop(client.key, None)

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

"""The proxy core: bytes, source and `now` in; bytes to send and the next timer out. No I/O.

The path of an outbound INVITE: parse -> transaction match -> classify by source -> caller-ID
decision -> edits (From, PAI, Via, Record-Route with the signed identity, Max-Forwards) ->
applied to the original bytes -> client transaction -> the adapter sends and arms `get_timer()`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from proxy.sip import requests as request_edits
from proxy.sip.addresses import Outgoing, Source, Target, unroutable_reason
from proxy.sip.caller_id import ShownIdentity, replace_identity_header, rewrite_caller_id
from proxy.sip.classify import side_of, trunk_index_of
from proxy.sip.dialogs import DialogMemory
from proxy.sip.edits import Edit, apply_edits, remove_via_value
from proxy.sip.errors import (
    BadExtension,
    BadRequest,
    Forbidden,
    MessageTooLarge,
    SipError,
    TooManyHops,
    UnparseableMessage,
    UnsupportedUriScheme,
)
from proxy.sip.grammar import parse_sip_uri, uri_scheme
from proxy.sip.identity import DialogIdentity
from proxy.sip.message import SipMessage
from proxy.sip.parse import Message, lenient_split, parse_message
from proxy.sip.policy import PBX_SIDE, TRUNK_SIDE, CallerIdPolicy, ProxyConfig
from proxy.sip.responses import build_response
from proxy.sip.transaction_layer import TransactionLayer
from proxy.sip.transactions import (
    OUR_BRANCH_PREFIX,
    ClientTransaction,
    Restore,
    outgoing_branch,
    server_key,
)
from proxy.sip.untrusted import glance, is_scanner, short_forbidden

log = logging.getLogger("callerid_proxy.core")

PBX, TRUNK = PBX_SIDE, TRUNK_SIDE
ROUTABLE_SCHEMES = ("sip", "sips", "tel")
DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER")


class ProxyCore:
    def __init__(self, config: ProxyConfig, policy: CallerIdPolicy) -> None:
        self.config = config
        self.policy = policy
        self.counters: Counter[str] = Counter()
        self._outbox: list[Outgoing] = []
        self._dialogs = DialogMemory()
        self._now = 0.0  # the time of the message or timer being handled
        self._transactions = TransactionLayer(
            self._outbox, self.counters, self._upstream_bytes, self._relay_stateless
        )

    # ----------------------------------------------------------------- adapter interface
    def receive(self, data: bytes, source: Source, now: float) -> None:
        """One datagram, or one framed stream message, from `source`."""
        self.counters["received"] += 1
        self._now = now
        if side_of(self.config, source) is None:  # trust before work (issue 7)
            self._refuse_untrusted(data, source)
            return
        try:
            msg = parse_message(data, datagram=source.transport == "udp", lazy=True)
            if _may_be_forwarded(msg):
                msg.validate()  # all a forwarded message must satisfy (RFC 3261 16.3, 4475)
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

    def receive_broken_stream(
        self, head: bytes, reason: str, source: Source, *, status: int = 400
    ) -> None:
        """A stream message that could not be framed: answer it if possible; the adapter closes."""
        if side_of(self.config, source) is None:
            self._refuse_untrusted(head, source)
            return
        error: SipError = MessageTooLarge(reason) if status == 513 else BadRequest(reason)
        self._refuse_unparsed(head, source, error, close_after=True)

    def datagrams_to_send(self) -> list[Outgoing]:
        out = self._outbox[:]
        self._outbox.clear()  # the transaction layer holds the same list
        return out

    def get_timer(self) -> float | None:
        return self._transactions.next_deadline()

    def handle_timer(self, now: float) -> None:
        self._now = now
        self._transactions.handle_timer(now)

    def transport_failed(self, target: Target, now: float) -> None:
        self._transactions.transport_failed(target, now)

    @property
    def transaction_count(self) -> int:
        return self._transactions.count

    # ----------------------------------------------------------------- refusals and drops
    def _drop(self, reason: str, *, count: bool = True) -> None:
        if count:
            self.counters["dropped"] += 1
        log.warning("dropped: %s", reason)

    def _refuse_unparsed(
        self, data: bytes, source: Source, error: SipError, *, close_after: bool = False
    ) -> None:
        wire = error.wire or lenient_split(data)
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
        wire: SipMessage,
        source: Source,
        error: SipError,
        *,
        close_after: bool = False,
    ) -> None:
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

    # ----------------------------------------------------------------- requests
    def _on_request(self, msg: Message, source: Source, now: float) -> None:
        if self._transactions.absorb(msg, now):
            return
        side = side_of(self.config, source)
        if side is None:
            if msg.method == "ACK":
                self._drop(f"ACK from unknown source {source.host}:{source.port}")
                return
            raise Forbidden(f"source {source.host}:{source.port} is neither the PBX nor the trunk")
        if msg.method == "CANCEL":
            self._on_cancel(msg, source, side, now)
            return
        self._check_forwardable(msg)
        if msg.to_addr.tag is not None:
            self._forward_in_dialog(msg, source, side, now)
        else:
            self._forward_initial(msg, source, side, now)

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

    def _hop_edits(self, msg: Message, target: Target) -> list[Edit]:
        return request_edits.max_forwards_edits(msg) + request_edits.content_length_edits(
            msg, target
        )

    def _forward_in_dialog(self, msg: Message, source: Source, side: str, now: float) -> None:
        """Our Route entries off; the dialog's identity (from our token) put back or again."""
        route = request_edits.undo_strict_routing(
            msg, self.config
        ) or request_edits.pop_our_routes(msg, self.config)
        identity, trunk_index = route.identity, route.trunk_index
        if identity is None:  # no token: a peer dropped our Record-Route; ask our memory
            pbx_tag = msg.from_addr.tag if side == PBX else msg.to_addr.tag
            remembered = self._dialogs.recall(msg.call_id, pbx_tag, now)
            if remembered is not None:
                self.counters["dialogs_restored_from_memory"] += 1
                identity, trunk_index = remembered.identity, remembered.trunk_index
        target = self.config.trunks[trunk_index] if side == PBX else self.config.pbx
        identity_edits, restore = self._in_dialog_identity(msg, side, identity)
        edits = self._hop_edits(msg, target) + route.edits + identity_edits
        if msg.method == "ACK":
            self._forward_stateless(msg, source, target, edits)
            return
        self._forward_stateful(msg, source, (target,), lambda *_: (edits, restore), now)

    def _forward_initial(self, msg: Message, source: Source, side: str, now: float) -> None:
        """Out of dialog: to the trunks in order (failover) or to the PBX. An outbound INVITE
        gets its caller ID decided here, once, whichever trunk ends up taking it."""
        targets = self.config.trunks if side == PBX else (self.config.pbx,)
        # An outbound proxy setting on the PBX puts our URI in a Route: ours to remove (16.4).
        our_routes = request_edits.pop_our_routes(msg, self.config).edits
        shown = self._decide_caller_id(msg) if side == PBX and msg.method == "INVITE" else None
        inbound_trunk = trunk_index_of(self.config, source) if side == TRUNK else 0

        def edits_for(target: Target, attempt: int) -> tuple[list[Edit], Restore | None]:
            trunk_index = attempt if side == PBX else inbound_trunk
            edits, restore = self._initial_edits(msg, source, side, target, shown, trunk_index)
            return edits + our_routes, restore

        if msg.method == "ACK":  # a stray ACK outside any dialog: nothing to keep state for
            self._forward_stateless(msg, source, targets[0], edits_for(targets[0], 0)[0])
            return
        self._forward_stateful(msg, source, targets, edits_for, now)

    def _initial_edits(
        self,
        msg: Message,
        source: Source,
        side: str,
        target: Target,
        shown: ShownIdentity | None,
        trunk_index: int,
    ) -> tuple[list[Edit], Restore | None]:
        edits = self._hop_edits(msg, target)
        identity: DialogIdentity | None = None
        restore = None
        if shown is not None:
            rewrite, identity = rewrite_caller_id(msg, shown, target.uri_host())
            edits += rewrite
            restore = Restore("from", identity.original_from)
            if msg.from_addr.tag is not None:
                self._dialogs.remember(
                    msg.call_id, msg.from_addr.tag, identity, trunk_index, self._now
                )
        if msg.method in DIALOG_CREATING:
            upstream = self.config.facing(side, source.transport, source.host)
            downstream = self._facing(target)
            edits += request_edits.record_route_edits(
                msg, self.config, upstream, downstream, identity, trunk_index
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

    def _facing(self, target: Target) -> Target:
        side = self.config.side_of_target(target)
        return self.config.facing(side, target.transport, target.host)

    def _via_edits(self, msg: Message, source: Source, target: Target, branch: str) -> list[Edit]:
        return request_edits.via_edits(msg, source, self._facing(target), branch)

    def _forward_stateless(
        self, msg: Message, source: Source, target: Target, edits: list[Edit]
    ) -> None:
        # A CANCEL's key is its INVITE's, so that it gets the INVITE's branch (RFC 3261 9.1).
        key = server_key(msg, "INVITE" if msg.method == "CANCEL" else None)
        branch = outgoing_branch(key, target.transport)
        data = apply_edits(
            msg.raw, self._via_edits(msg, source, target, branch) + edits, msg.wire.body_end
        )
        self.counters["forwarded_stateless"] += 1
        self._outbox.append(Outgoing(data, target))

    def _forward_stateful(
        self,
        msg: Message,
        source: Source,
        targets: tuple[Target, ...],
        edits_for: Callable[[Target, int], tuple[list[Edit], Restore | None]],
        now: float,
    ) -> None:
        server = self._transactions.open_server(msg, source)

        def client_for(target: Target, index: int) -> ClientTransaction:
            edits, restore = edits_for(target, index)
            # Each attempt is its own client transaction; the first keeps the plain derived
            # branch, which a restarted proxy can compute again for a stateless CANCEL.
            branch = outgoing_branch(
                server.key, target.transport if index == 0 else f"{target.transport}#{index}"
            )
            via = self._via_edits(msg, source, target, branch)
            data = apply_edits(msg.raw, via + edits, msg.wire.body_end)
            return ClientTransaction(branch, msg.method, target, data, server, restore)

        server.retarget = client_for
        server.alternatives = list(targets[1:])
        self._transactions.start_client(client_for(targets[0], 0), now)

    # ----------------------------------------------------------------- CANCEL
    def _on_cancel(self, msg: Message, source: Source, side: str, now: float) -> None:
        invite = self._transactions.invite_server_for_cancel(msg)
        if invite is not None:
            self._transactions.cancel(invite, msg, source, now)
            return
        # No INVITE known here (e.g. after a restart): forward it statelessly (RFC 3261 16.10);
        # its derived branch is the one the INVITE was forwarded with.
        target = self.config.trunk if side == PBX else self.config.pbx
        self._forward_stateless(msg, source, target, self._hop_edits(msg, target))

    # ----------------------------------------------------------------- responses
    def _on_response(self, msg: Message, source: Source, now: float) -> None:
        if side_of(self.config, source) is None:
            self._drop(f"response from unknown source {source.host}:{source.port}")
            return
        top = msg.vias[0]
        if not (top.branch or "").startswith(OUR_BRANCH_PREFIX) or not self._is_ours(top.host):
            self._drop(f"response whose top Via is not ours ({top.sent_by})")
            return
        client = self._transactions.client_for(top.branch or "", msg.cseq_method)
        if client is None:
            self._relay_stateless(msg)
            return
        self._transactions.on_response(client, msg, now)

    def _is_ours(self, host: str) -> bool:
        return any(host.strip("[]") == target.host for target in self.config.advertised)

    def _upstream_bytes(self, msg: Message, restore: Restore | None) -> bytes | None:
        """A response as it goes upstream: our Via off, the sender's identity given back."""
        if len(msg.vias) < 2:
            self._drop("response with only our Via: nowhere to relay")
            return None
        edits = [remove_via_value(msg.wire, msg.vias, msg.vias[0])]
        if restore is not None:
            edits += replace_identity_header(msg, restore.header, restore.value)
        return apply_edits(msg.raw, edits, msg.wire.body_end)

    def _restore_from_memory(self, msg: Message) -> Restore | None:
        """A response without our Record-Route token: the PBX's tag finds the dialog, if any."""
        by_from = self._dialogs.recall(msg.call_id, msg.from_addr.tag, self._now)
        if by_from is not None:  # a response to the PBX's request
            return Restore("from", by_from.identity.original_from)
        by_to = self._dialogs.recall(msg.call_id, msg.to_addr.tag, self._now)
        if by_to is not None:  # a response to the trunk's request
            return Restore("to", by_to.identity.rewritten_from)
        return None

    def _relay_stateless(self, msg: Message) -> None:
        """No transaction (2xx retransmission, restart): restore from our Record-Route token."""
        restore = request_edits.restore_from_record_route(msg, self.config)
        data = self._upstream_bytes(msg, restore or self._restore_from_memory(msg))
        if data is None:
            return
        upstream = msg.vias[1]
        host = upstream.params.get("received") or upstream.host
        rport = upstream.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else upstream.port or 5060
        unroutable = unroutable_reason(host)
        if unroutable is not None:
            self._drop(f"response toward {host[:64]}: {unroutable}")
            return
        transport = "udp" if upstream.transport == "UDP" else "tcp"
        self.counters["responses_relayed_stateless"] += 1
        self._outbox.append(Outgoing(data, Target(transport, host.strip("[]"), port)))

    # ----------------------------------------------------------------- untrusted sources
    def _refuse_untrusted(self, data: bytes, source: Source) -> None:
        """Judged from a bounded glance, never parsed: a short 403, or silence (issue 7).
        Over a stream the connection is closed after it: an outsider gets one answer."""
        seen = glance(data)
        close = source.transport != "udp"
        if is_scanner(seen.user_agent):
            self.counters["dropped_scanner"] += 1
            self._close_silently(source, close)
            return
        response = None
        if seen.method != "ACK" and self.config.untrusted == "reply":  # ACK: RFC 3261 17.2.1
            response = short_forbidden(seen, len(data))
        if response is None:
            self.counters["dropped"] += 1
            self.counters["dropped_untrusted"] += 1
            self._close_silently(source, close)
        else:
            self.counters["refused_403"] += 1
            self._outbox.append(
                Outgoing(response, source.reply_target(), source.connection, close)
            )
        # Counted, never one log line per packet at the default level (issue 7: a flood of
        # outsiders must not flood the log).
        if log.isEnabledFor(logging.DEBUG):
            answer = "dropped" if response is None else "refused with 403"
            log.debug("%s from untrusted %s:%s %s", seen.method, source.host, source.port, answer)

    def _close_silently(self, source: Source, close: bool) -> None:
        if close:
            self._outbox.append(Outgoing(b"", source.reply_target(), source.connection, True))


def _may_be_forwarded(msg: Message) -> bool:
    """Every request may be, and every response that carries our Via on top. A response whose
    top Via is not ours is dropped unread (RFC 3261 16.7: it was not for us), so only the top Via
    every message has parsed is ever read, and the rest of its grammar is left unchecked (lazy
    parsing, issue 6). A 100 Trying is checked too: it can be relayed statelessly when no
    transaction knows it."""
    if msg.is_request:
        return True
    return (msg.top_via.branch or "").startswith(OUR_BRANCH_PREFIX)

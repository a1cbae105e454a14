"""The proxy core: bytes, source and `now` in; bytes to send, events and the next timer out.
No I/O, no clock, no logging.

The path of an outbound INVITE: `receive` -> `_on_request` (retransmission absorbed? which side?)
-> `_forward_initial` (caller ID decided once, a `ForwardPlan`) -> `_forward_stateful` (server
transaction, 100 Trying) -> `_start_attempt` (edits for this trunk, applied to the original bytes
once) -> `TransactionLayer.start_client`. Its 200 OK: `receive` -> `_on_response` (our Via, our
client transaction) -> `TransactionLayer.on_response` (our Via off, identity restored, final
upstream); the core acts on what the layer returns (`_act`: failover, stateless relay).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from typing import Final

from proxy.sip import requests as request_edits
from proxy.sip.addresses import (
    VIA_TRANSPORTS,
    Outgoing,
    Source,
    Target,
    normalise_host,
    unroutable_reason,
)
from proxy.sip.caller_id import (
    MessageCallFacts,
    ShownIdentity,
    asserted_identity_removals,
    replace_identity_header,
    rewrite_caller_id,
)
from proxy.sip.classify import side_of, trunk_index_of
from proxy.sip.counters import Counts
from proxy.sip.dialogs import DialogMemory
from proxy.sip.edits import Edit, apply_edits
from proxy.sip.errors import (
    BadExtension,
    BadRequest,
    MessageTooLarge,
    SipError,
    TooManyHops,
    UnparseableMessage,
    UnsupportedUriScheme,
)
from proxy.sip.events import (
    Answered,
    CallerIdDecided,
    Dropped,
    Event,
    Refused,
    Shed,
    TrunkProbed,
    TrunkStateChanged,
)
from proxy.sip.grammar import SipUri, parse_sip_uri, uri_scheme
from proxy.sip.identity import DialogIdentity
from proxy.sip.message import SipMessage
from proxy.sip.next_hop import dialog_next_hop
from proxy.sip.our_address import OurAddress
from proxy.sip.parse import Message, lenient_split, parse_message
from proxy.sip.policy import PBX_SIDE, TRUNK_SIDE, CallerIdPolicy, ProxyConfig
from proxy.sip.responses import (
    OWN_TO_TAG_LENGTH,
    OWN_TO_TAG_PREFIX,
    build_response,
    own_to_tag,
)
from proxy.sip.transaction_layer import (
    Action,
    ProbeResult,
    RelayStateless,
    Retarget,
    TransactionLayer,
    upstream_bytes,
)
from proxy.sip.transactions import (
    OUR_BRANCH_PREFIX,
    ClientTransaction,
    ForwardPlan,
    Restore,
    ServerTransaction,
    outgoing_branch,
    server_key,
)
from proxy.sip.trunks import TrunkHealth, probe_request
from proxy.sip.untrusted import (
    TRYING,
    glance,
    is_scanner,
    own_ack_glance,
    shed_glance,
    shed_response,
    short_forbidden,
    short_response,
    trying_glance,
)
from proxy.sip.value_memo import ValueMemo

PBX, TRUNK = PBX_SIDE, TRUNK_SIDE
ROUTABLE_SCHEMES: Final = ("sip", "sips", "tel")
DIALOG_CREATING: Final = ("INVITE", "SUBSCRIBE", "REFER")
# RFC 3261 18.1.1: larger requests need a congestion-controlled one
UDP_PATH_MTU_LIMIT: Final = 1300
UDP_MAX: Final = 65_507  # the largest UDP payload over IPv4
_DROP_LABELS: Final = (
    ("unparseable", "unparseable"),
    ("octets after", "trailing bytes"),
    ("response from", "bad response"),
)


class ProxyCore:
    def __init__(self, config: ProxyConfig, policy: CallerIdPolicy) -> None:
        self.config = config
        self.policy = policy
        self.counters: Counts[str] = Counts()
        # Drained by copy and clear (the start-up lists stay): issue 7, see TransactionLayer.
        self._outbox: list[Outgoing] = []
        self._events: list[Event] = []
        self._dialogs = DialogMemory(config.max_dialogs)
        self._parsed = ValueMemo()  # From/To/Contact/Via/Route values seen lately, parsed
        self._transactions = TransactionLayer(
            self.counters, config.failover_statuses, config.no_answer_timeout
        )
        self._overloaded = False  # the glue says the loop lags
        self._trunks = TrunkHealth(config.trunks, config.probe_failures, config.probe_successes)
        self._trunk_number = {(t.host, t.port): i for i, t in enumerate(config.trunks)}
        self._next_probe: float | None = None  # when the next round of keepalives is due
        self._probe_sequence = 0
        # Random per core, as aioquic's connection draws its own ids: a restarted proxy's
        # keepalives get new Call-IDs, tags and branches (RFC 3261 8.1.1.4, 8.1.1.7, 19.3).
        self._instance = secrets.token_hex(4)
        self._round_robin = 0

    # ----------------------------------------------------------------- adapter interface
    def receive(self, data: bytes, source: Source, now: float) -> None:
        """One datagram, or one framed stream message, from `source`."""
        self.counters["received"] += 1
        side = side_of(self.config, source)
        if side is None:  # trust before work (issue 7)
            self._refuse_untrusted(data, source)
            return
        if self._shed_cause() is not None and self._shed_from_glance(data, source):
            return  # overload: a new INVITE answered 503 before any parse
        if data.startswith(b"ACK ") and self._own_ack_at_a_glance(data):
            return  # the ACK of a 503 (or another answer) we made without state: it ends here
        if data.startswith(TRYING) and self._trying_at_a_glance(data, now):
            return  # a 100 Trying to a live client transaction: absorbed (RFC 3261 16.7 step 5)
        try:
            msg = parse_message(
                data, datagram=source.transport == "udp", lazy=True, memo=self._parsed
            )
            if msg.wire.method == "INVITE" and self._shed_at_once(msg, source, now):
                return  # overload: answered 503 from the lazy parse, nothing validated
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
                self._on_request(msg, source, side, now)
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
        self._pull()
        out = self._outbox.copy()
        self._outbox.clear()
        return out

    def events_to_handle(self) -> list[Event]:
        """What happened since the last call, in order: for logs, metrics and the audit line."""
        self._pull()
        events = self._events.copy()
        self._events.clear()
        return events

    def get_timer(self) -> float | None:
        deadline = self._transactions.next_deadline()
        probe = self._next_probe
        if probe is None or (deadline is not None and deadline < probe):
            return deadline
        return probe

    def handle_timer(self, now: float) -> None:
        if self._next_probe is not None and self._next_probe <= now:
            self._probe_trunks(now)
        self._act(self._transactions.handle_timer(now), now)

    def start_probes(self, now: float) -> None:
        """OPTIONS keepalives to every trunk from `now` on, every `probe_interval` (if set)."""
        if self.config.probe_interval is not None:
            self._next_probe = now

    def trunk_status(self) -> list[dict[str, object]]:
        return [
            {
                "trunk": state.target.hostport(),
                "up": state.up,
                "probes": state.probes,
                "last_status": state.last_status,
            }
            for state in self._trunks.states
        ]

    def transport_failed(self, target: Target, now: float) -> None:
        self._act(self._transactions.transport_failed(target, now), now)

    def set_trunks(self, trunks: tuple[Target, ...]) -> None:
        """New trunk targets (DNS re-resolution, RFC 3263): the failover order from the next
        call on; a trunk still listed keeps its probe state."""
        if not trunks or trunks == self.config.trunks:
            return
        self.config = dataclasses.replace(self.config, trunk=trunks[0], extra_trunks=trunks[1:])
        known = {state.target: state for state in self._trunks.states}
        config = self.config
        self._trunks = TrunkHealth(trunks, config.probe_failures, config.probe_successes)
        self._trunks.states = [known.get(state.target, state) for state in self._trunks.states]
        self._trunk_number = {(t.host, t.port): i for i, t in enumerate(trunks)}

    def set_overloaded(self, overloaded: bool) -> None:
        """The glue measured the event loop's lag: while it is over its threshold, new INVITEs
        are shed with 503 (in-dialog requests, responses, ACK and CANCEL keep flowing)."""
        self._overloaded = overloaded

    @property
    def overloaded(self) -> bool:
        return self._overloaded

    @property
    def transaction_count(self) -> int:
        return self._transactions.count

    @property
    def server_transaction_count(self) -> int:
        return self._transactions.server_count

    @property
    def pending_transaction_count(self) -> int:
        """Calls being set up (no final answer yet): what `max_transactions` bounds."""
        return self._transactions.pending_server_count

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    def shrink(self) -> None:
        """Give back what a flood's peak left in the core's tables (issue 7): dict and list
        capacity, not entries. For quiet moments: proxy/memory_trim.py calls it after a flood."""
        self._transactions.shrink()
        self._dialogs.shrink()

    def _pull(self) -> None:
        """The layer's output after ours, in the order things happened."""
        for call_id, pbx_tag in self._transactions.take_into(self._outbox, self._events):
            self._dialogs.forget(call_id, pbx_tag)

    def _act(self, actions: list[Action], now: float) -> None:
        self._pull()
        for action in actions:
            if isinstance(action, Retarget):
                server = self._transactions.server(action.server)
                if server is not None:
                    self._start_attempt(server, action.target, action.attempt, now)
            elif isinstance(action, RelayStateless):
                self._relay_stateless(action.response, now)
            elif isinstance(action, ProbeResult):
                self._probed(action)
            self._pull()

    # ----------------------------------------------------------------- trunk keepalives
    def _probe_trunks(self, now: float) -> None:
        interval = self.config.probe_interval
        self._next_probe = None if interval is None else now + interval
        for index, trunk in enumerate(self.config.trunks):
            self._probe_sequence += 1
            sequence = self._probe_sequence
            branch = outgoing_branch(("keepalive", self._instance, str(sequence)), trunk.transport)
            data = probe_request(trunk, self._facing(trunk), branch, sequence, self._instance)
            client = ClientTransaction(branch, "OPTIONS", trunk, data, None, probe=index)
            self._transactions.start_client(client, now, "probe")
        self._pull()

    def _probed(self, result: ProbeResult) -> None:
        if result.trunk >= len(self.config.trunks):
            return  # a probe of a trunk that DNS has since taken out of the list
        trunk = self.config.trunks[result.trunk]
        self._events.append(TrunkProbed(trunk, result.status))
        changed = self._trunks.record(result.trunk, result.status)
        if changed is not None:
            self._events.append(TrunkStateChanged(trunk, changed))

    def _outbound_trunks(self) -> tuple[Target, ...]:
        """The trunks a new outbound call tries, in order: those up, from the next one in turn
        with round-robin."""
        up = self._trunks.up()
        if self.config.round_robin and len(up) > 1:
            start = self._round_robin % len(up)
            self._round_robin += 1
            up = up[start:] + up[:start]
        return tuple(up)

    # ----------------------------------------------------------------- refusals and drops
    def _drop(
        self,
        detail: str,
        *,
        count: bool = True,
        reason: str | None = None,
        source: Source | None = None,
    ) -> None:
        if count:
            self.counters["dropped"] += 1
        if reason is None:
            reason = next((label for start, label in _DROP_LABELS if start in detail), "other")
        self._events.append(Dropped(reason, source, detail))

    def _refuse_unparsed(
        self, data: bytes, source: Source, error: SipError, *, close_after: bool = False
    ) -> None:
        wire = error.wire or lenient_split(data)
        if isinstance(error, UnparseableMessage) or wire is None or not wire.is_request:
            if not self._answer_from_glance(data, source, error, close_after):
                self._drop(f"unparseable message from {source.host}:{source.port}: {error.detail}")
                if close_after:
                    self._outbox.append(
                        Outgoing(b"", source.reply_target(), source.connection, True)
                    )
            return
        self._send_error(wire.method or "", wire, source, error, close_after=close_after)

    def _answer_from_glance(
        self, data: bytes, source: Source, error: SipError, close_after: bool
    ) -> bool:
        """A request from a peer we serve that no split can read (a header line without a
        colon, a name that is no token, a continuation line first): RFC 3261 16.3 still wants
        an answer when one can be given, so the bounded glance the untrusted path uses finds
        the lines a 400 copies. An ACK is never answered (17.2.1)."""
        seen = glance(data)
        if seen.method is None or seen.method == "ACK":
            return False
        response = short_response(seen, b"%d %s" % (error.status_code, error.reason.encode()))
        if response is None:
            return False
        try:  # the glance copies lines as they came: only an answer that itself parses leaves
            parse_message(response, datagram=True)
        except SipError:
            return False
        self.counters[f"refused_{error.status_code}"] += 1
        self._events.append(Refused(error.status_code, error.detail, source, seen.method[:32]))
        self._outbox.append(Outgoing(response, source.reply_target(), source.connection,
                                     close_after))  # fmt: skip
        return True

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
        self._events.append(Refused(error.status_code, error.detail, source, method[:32]))
        if method == "ACK" or not wire.get_all("via"):
            return  # an ACK is never answered (RFC 3261 17.2.1); no Via, nowhere to answer
        response = build_response(wire, error.status_code, error.reason, error.extra_headers)
        self._outbox.append(
            Outgoing(response, source.reply_target(), source.connection, close_after)
        )

    # ----------------------------------------------------------------- requests
    def _on_request(self, msg: Message, source: Source, side: str, now: float) -> None:
        """A request from `side` (the trust check in `receive` has found one)."""
        if self._transactions.absorb(msg, now):
            return
        to_tag = msg.to_addr.tag
        if msg.method == "ACK" and to_tag is not None and _is_own_to_tag(msg, to_tag):
            self.counters["acks_of_our_answers"] += 1  # e.g. of a shed INVITE's 503: it ends here
            return
        if msg.method == "CANCEL":
            self._on_cancel(msg, source, side, now)
            return
        request_uri = self._check_forwardable(msg)
        if request_edits.is_options_for_us(msg, self.config):
            self._answer_options(msg, source)
            return
        if to_tag is not None:
            self._forward_in_dialog(msg, source, side, request_uri, now)
        else:
            self._forward_initial(msg, source, side, request_uri, now)

    def _answer_options(self, msg: Message, source: Source) -> None:
        """RFC 3261 11.2: we are the OPTIONS' target (a dispatcher's keepalive): 200 here."""
        self.counters["options_answered"] += 1
        response = build_response(msg.wire, 200, "OK")
        self._outbox.append(Outgoing(response, source.reply_target(), source.connection))

    def _check_forwardable(self, msg: Message) -> SipUri | None:
        """RFC 3261 16.3 request validation a proxy must do before forwarding. The Request-URI
        parsed (None for a tel: URI), for what reads it next."""
        uri = msg.wire.uri
        scheme = "sip" if uri[:4] == "sip:" else uri_scheme(uri)  # the usual one, no regex
        if scheme not in ROUTABLE_SCHEMES:
            raise UnsupportedUriScheme(f"cannot route a {scheme!r} Request-URI")
        request_uri = parse_sip_uri(uri) if scheme != "tel" else None
        if request_uri is not None and request_uri.has_headers:
            raise BadRequest("Request-URI carries URI headers ('?'), which a request must not")
        if msg.max_forwards == 0 and msg.method != "ACK":
            raise TooManyHops("Max-Forwards reached 0")
        unsupported = request_edits.proxy_require_options(msg)
        if unsupported:
            joined = ", ".join(unsupported)
            raise BadExtension(
                f"unsupported Proxy-Require: {joined}", extra_headers=(("Unsupported", joined),)
            )
        return request_uri

    def _hop_edits(self, msg: Message, target: Target) -> list[Edit]:
        return request_edits.max_forwards_edits(msg) + request_edits.content_length_edits(
            msg, target
        )

    def _forward_in_dialog(
        self, msg: Message, source: Source, side: str, request_uri: SipUri | None, now: float
    ) -> None:
        """Our Route entries off; the dialog's identity (from our token) put back or again."""
        route = request_edits.undo_strict_routing(
            msg, self.config, request_uri
        ) or request_edits.pop_our_routes(msg, self.config)
        identity, trunk_index = route.identity, route.trunk_index
        if identity is None:  # no token: a peer dropped our Record-Route; ask our memory
            pbx_tag = msg.from_addr.tag if side == PBX else msg.to_addr.tag
            remembered = self._dialogs.recall(msg.call_id, pbx_tag, now)
            if remembered is not None:
                self.counters["dialogs_restored_from_memory"] += 1
                identity, trunk_index = remembered.identity, remembered.trunk_index
        if side == PBX and identity is None and not route.known and msg.method == "INVITE":
            # A To tag, but no token or mark of ours and no memory of it: a dialog that never
            # went through us. As a re-INVITE it would reach the trunk with the PBX's own From
            # and P-Asserted-Identity, around the rules: its caller ID is decided as a new
            # call's (the trunk answers 481 if it knows no such dialog, RFC 3261 12.2.2).
            self.counters["invites_of_unknown_dialogs"] += 1
            self._forward_initial(msg, source, side, request_uri, now)
            return
        peer = self.config.trunks[trunk_index] if side == PBX else self.config.pbx
        target = self._dialog_target(peer, route.next_route, request_uri)
        identity_edits, restore = self._in_dialog_identity(msg, side, identity)
        edits = route.edits + identity_edits
        if msg.method == "ACK":
            self._forward_stateless(msg, source, target, self._hop_edits(msg, target) + edits)
            return
        plan = ForwardPlan(side, None, tuple(edits), restore, True, trunk_index)
        self._forward_stateful(msg, source, plan, (target,), now)

    def _dialog_target(
        self, peer: Target, next_route: str | None, request_uri: SipUri | None
    ) -> Target:
        """`dialog_next_hop`, but never to another port of the peer's host that is ours, the
        other side's or another trunk's (PBX, trunk and proxy on one host: a Contact or Route
        naming one of those is no way to the peer, and would loop or reflect the request)."""
        target = dialog_next_hop(peer, next_route, request_uri)
        if target is peer:
            return peer
        config = self.config
        for known in (config.pbx, *config.trunks, *config.advertised):
            if (known.host, known.port) == (target.host, target.port):
                return peer
        return target

    def _forward_initial(
        self, msg: Message, source: Source, side: str, request_uri: SipUri | None, now: float
    ) -> None:
        """Out of dialog: to the trunks in order (failover) or to the PBX. An outbound INVITE
        gets its caller ID decided here, once, whichever trunk ends up taking it."""
        targets = self._outbound_trunks() if side == PBX else (self.config.pbx,)
        if msg.method == "ACK" and not targets:
            targets = (self.config.trunk,)  # stateless anyway
        if not targets:
            self._refuse_all_down(msg, source)
            return
        if msg.method == "INVITE" and self._shed(msg, source):
            return
        # An outbound proxy setting on the PBX puts our URI in a Route: ours to remove (16.4).
        our_routes = request_edits.pop_our_routes(msg, self.config).edits
        outbound_invite = side == PBX and msg.method == "INVITE"
        shown = self._decide_caller_id(msg, request_uri) if outbound_invite else None
        inbound_trunk = trunk_index_of(self.config, source) if side == TRUNK else 0
        plan = ForwardPlan(side, shown, tuple(our_routes), None, False, inbound_trunk)
        if msg.method == "ACK":  # a stray ACK outside any dialog: nothing to keep state for
            edits, _ = self._plan_edits(msg, source, plan, targets[0], now)
            self._forward_stateless(msg, source, targets[0], edits)
            return
        self._forward_stateful(msg, source, plan, targets, now)

    def _refuse_all_down(self, msg: Message, source: Source) -> None:
        """Every trunk failed its keepalives: 503 at once rather than a call left to time out."""
        self.counters["shed"] += 1
        self._events.append(Shed(source, "all trunks down", self.config.retry_after))
        self._answer_503(msg, source)

    def _answer_503(self, msg: Message, source: Source) -> None:
        retry_after = str(self.config.retry_after)
        response = build_response(
            msg.wire, 503, "Service Unavailable", (("Retry-After", retry_after),)
        )
        self._outbox.append(Outgoing(response, source.reply_target(), source.connection))

    def _shed_cause(self) -> str | None:
        """Why a new INVITE would be shed now, if it would (issue 7, like a carrier proxy)."""
        if self._overloaded:
            return "loop lag"
        if self._transactions.pending_server_count >= self.config.max_transactions:
            return "transactions"
        return None

    def _shed_from_glance(self, data: bytes, source: Source) -> bool:
        """The cheapest refusal: a new INVITE's 503 from a glance at its header lines (see
        `shed_glance`), unless it is a retransmission of an admitted INVITE (its transaction,
        live or answered, answers it) or the glance cannot tell (the parse then decides,
        `_shed_at_once`)."""
        seen = shed_glance(data)
        if seen is None or self._transactions.has_server(seen.key):
            return False
        cause = self._early_shed_cause(source)
        if cause is None:
            return False
        self._count_shed(source, cause)
        response = shed_response(seen, self.config.retry_after)
        self._outbox.append(Outgoing(response, source.reply_target(), source.connection))
        return True

    def _own_ack_at_a_glance(self, data: bytes) -> bool:
        """The ACK of a final answer we made without a transaction (a shed INVITE's 503) is
        absorbed from a glance, as `_on_request` would after a parse (RFC 3261 17.2.1: it ends
        at the hop that answered). One whose INVITE has a server transaction goes the usual way:
        that transaction takes it (17.2.1, Completed -> Confirmed)."""
        seen = own_ack_glance(data)
        if seen is None or self._transactions.has_server(seen.key):
            return False
        if seen.to_tag != own_to_tag(seen.call_id, seen.from_tag):
            return False
        self.counters["acks_of_our_answers"] += 1
        return True

    def _trying_at_a_glance(self, data: bytes, now: float) -> bool:
        """A 100 Trying to one of our live client transactions, taken from a glance (see
        `trying_glance`). Any other (a finished transaction's, a stray one, one only a parse
        can read) goes the full way, which decides as before."""
        seen = trying_glance(data)
        if seen is None or not self._is_ours(seen.host):
            return False
        actions = self._transactions.on_trying(seen.branch, seen.method, now)
        if actions is None:
            return False
        self.counters["trying_glanced"] += 1
        self._act(actions, now)
        return True

    def _shed_at_once(self, msg: Message, source: Source, now: float) -> bool:
        """While shedding, a new INVITE is answered before its full validation: only what the
        503 copies (RFC 3261 8.2.6.2: Via, From, To, Call-ID, CSeq; the From tag picks our To
        tag) has to parse, so the refusal costs a fraction of an admitted call. A re-INVITE (To
        tag) and a retransmission of an admitted INVITE (its transaction answers it) go on;
        with every trunk down the usual path says so (its own 503)."""
        if self._early_shed_cause(source) is None or msg.to_addr.tag is not None:
            return False
        if self._transactions.absorb(msg, now):
            return True  # what _on_request does first: the admitted call's transaction answers
        msg.from_addr  # noqa: B018  (the 503's To tag is derived from it: it must parse)
        return self._shed(msg, source)

    def _shed(self, msg: Message, source: Source) -> bool:
        """Overload (issue 7, like a carrier proxy): a new INVITE gets 503 with Retry-After at
        once, without any state, when live transactions pass the bound or the loop lags
        (RFC 3261 21.5.4, 20.33). Everything already admitted keeps flowing."""
        cause = self._shed_cause()
        if cause is None:
            return False
        self._count_shed(source, cause)
        self._answer_503(msg, source)
        return True

    def _early_shed_cause(self, source: Source) -> str | None:
        """`_shed_cause` for a refusal before the usual path: none while every trunk is down
        for a call from the PBX (the usual path says so, with its own 503)."""
        cause = self._shed_cause()
        if cause is None or (not self._trunks.up() and side_of(self.config, source) == PBX):
            return None
        return cause

    def _count_shed(self, source: Source, cause: str) -> None:
        self.counters["shed"] += 1
        self._events.append(Shed(source, cause, self.config.retry_after))

    def _plan_edits(
        self,
        msg: Message,
        source: Source,
        plan: ForwardPlan,
        target: Target,
        now: float,
    ) -> tuple[list[Edit], Restore | None]:
        """Every edit but our Via, for this next hop."""
        edits = self._hop_edits(msg, target)
        if plan.in_dialog:
            return edits + list(plan.extra_edits), plan.restore
        if plan.side == PBX:  # the trunk's number in the config, whatever the order tried
            trunk_index = self._trunk_number.get((target.host, target.port), 0)
        else:
            trunk_index = plan.inbound_trunk
        edits += plan.extra_edits
        restore = None
        identity: DialogIdentity | None = None
        if plan.shown is not None:
            rewrite, identity = rewrite_caller_id(msg, plan.shown, target.uri_host(), trunk_index)
            edits += rewrite
            restore = Restore("from", identity.original_from)
            if msg.from_addr.tag is not None:
                self._dialogs.remember(msg.call_id, msg.from_addr.tag, identity, trunk_index, now)
        if msg.method in DIALOG_CREATING:
            upstream = self.config.facing_address(plan.side, source.transport, source.host)
            edits += request_edits.record_route_edits(
                msg, self.config, upstream, self._facing_address(target), identity, trunk_index
            )
        return edits, restore

    def _in_dialog_identity(
        self, msg: Message, side: str, identity: DialogIdentity | None
    ) -> tuple[list[Edit], Restore | None]:
        if identity is None:
            return [], None
        if side == PBX:
            edits = replace_identity_header(msg, "from", identity.rewritten_from)
            edits += asserted_identity_removals(msg)
            return edits, Restore("from", identity.original_from)
        edits = replace_identity_header(msg, "to", identity.original_from)
        return edits, Restore("to", identity.rewritten_from)

    def _decide_caller_id(self, msg: Message, request_uri: SipUri | None) -> ShownIdentity:
        if request_uri is not None:
            destination = request_uri.user or ""
        else:
            destination = request_edits.uri_user(msg.wire.uri)  # tel: its number
        decision = self.policy.decide_call(MessageCallFacts(msg, destination))
        self.counters["caller_id_decisions"] += 1
        self._events.append(
            CallerIdDecided(
                msg.call_id,
                decision.user,
                destination,
                decision.number,
                decision.name,
                decision.reason,
                decision.rules_version,
                self.config.trunk,
                decision.step,
                decision.privacy,
            )
        )
        return ShownIdentity.from_decision(decision)

    def _facing(self, target: Target) -> Target:
        side = self.config.side_of_target(target)
        return self.config.facing(side, target.transport, target.host)

    def _facing_address(self, target: Target) -> OurAddress:
        side = self.config.side_of_target(target)
        return self.config.facing_address(side, target.transport, target.host)

    def _via_edits(self, msg: Message, source: Source, target: Target, branch: str) -> list[Edit]:
        return request_edits.via_edits(msg, source, self._facing_address(target), branch)

    def _forward_stateless(
        self, msg: Message, source: Source, target: Target, edits: list[Edit]
    ) -> None:
        # A CANCEL's key is its INVITE's, so that it gets the INVITE's branch (RFC 3261 9.1).
        key = server_key(msg, "INVITE" if msg.method == "CANCEL" else None)
        branch = outgoing_branch(key, target.transport)
        data = apply_edits(
            msg.raw, self._via_edits(msg, source, target, branch) + edits, msg.wire.body_end
        )
        if target.transport == "udp" and len(data) > UDP_MAX:
            self._drop(f"{msg.method} of {len(data)} octets", reason="too large", source=source)
            return
        self.counters["forwarded_stateless"] += 1
        self._outbox.append(Outgoing(data, target))

    def _forward_stateful(
        self,
        msg: Message,
        source: Source,
        plan: ForwardPlan,
        targets: tuple[Target, ...],
        now: float,
    ) -> None:
        # The first attempt's edits before any state: a header they must read and cannot
        # (a malformed Remote-Party-ID) is a 400 with no server transaction left behind.
        first = self._plan_edits(msg, source, plan, targets[0], now)
        server = self._transactions.open_server(msg, source, now)
        server.plan = plan
        if plan.shown is not None and msg.from_addr.tag is not None:
            server.dialog = (msg.call_id, msg.from_addr.tag)
        server.alternatives = list(targets[1:])
        self._start_attempt(server, targets[0], 0, now, first)

    def _start_attempt(
        self,
        server: ServerTransaction,
        target: Target,
        attempt: int,
        now: float,
        prepared: tuple[list[Edit], Restore | None] | None = None,
    ) -> None:
        """The request built for `target` (attempt 0, or a failover) as a client transaction.
        Each attempt has its own branch; the first keeps the plain derived one, which a
        restarted proxy can compute again for a stateless CANCEL."""
        msg, source, plan = server.request, server.source, server.plan
        if msg is None or plan is None:
            return  # answered upstream meanwhile: nothing to retry
        side = self.config.side_of_target(target)
        edits, restore = prepared or self._plan_edits(msg, source, plan, target, now)
        branch, data = self._built(server, msg, source, target, attempt, edits)
        if target.transport == "udp" and len(data) > UDP_PATH_MTU_LIMIT:
            if side in self.config.large_over_tcp:  # RFC 3261 18.1.1: over TCP instead
                target = Target("tcp", target.host, target.port)
                edits, restore = self._plan_edits(msg, source, plan, target, now)
                branch, data = self._built(server, msg, source, target, attempt, edits)
            elif len(data) > UDP_MAX:
                self._too_large(server, target, len(data), now)
                return
        # No parse kept for a later CANCEL or ACK: they are read from `data` (issue 7).
        client = ClientTransaction(branch, msg.method, target, data, server.key, restore)
        self._transactions.start_client(client, now, side)
        self._transactions.release_request(server)  # when no other trunk is left to try
        self._pull()

    def _built(
        self,
        server: ServerTransaction,
        msg: Message,
        source: Source,
        target: Target,
        attempt: int,
        edits: list[Edit],
    ) -> tuple[str, bytes]:
        """This attempt's branch and the forwarded bytes (one copy of the untouched spans)."""
        branch = outgoing_branch(server.key, _direction(target, attempt))
        via = self._via_edits(msg, source, target, branch)
        return branch, apply_edits(msg.raw, via + edits, msg.wire.body_end)

    def _too_large(self, server: ServerTransaction, target: Target, size: int, now: float) -> None:
        """Nothing can carry it to the next hop (RFC 3261 18.1.1): 513 toward the sender at
        once, not a silent 408 after Timer B."""
        self.counters["too_large"] += 1
        self._events.append(
            Answered(server.method, target, 513, f"too large ({size} octets)")
        )
        self._transactions.answer(server, 513, "Message Too Large", now)
        self._pull()

    # ----------------------------------------------------------------- CANCEL
    def _on_cancel(self, msg: Message, source: Source, side: str, now: float) -> None:
        if self._transactions.cancel_invite(msg, source, now):
            self._pull()
            return
        # No INVITE known here (e.g. after a restart): forward it statelessly (RFC 3261 16.10);
        # its derived branch is the one the INVITE was forwarded with.
        target = self.config.trunk if side == PBX else self.config.pbx
        self._forward_stateless(msg, source, target, self._hop_edits(msg, target))

    # ----------------------------------------------------------------- responses
    def _on_response(self, msg: Message, source: Source, now: float) -> None:
        """A response from the PBX or a trunk (the trust check in `receive` has found one)."""
        top = msg.vias[0]
        if not (top.branch or "").startswith(OUR_BRANCH_PREFIX) or not self._is_ours(top.host):
            self._drop(
                f"response whose top Via is not ours ({top.sent_by})",
                reason="not our via",
                source=source,
            )
            return
        actions = self._transactions.on_response_to(top.branch or "", msg.cseq_method, msg, now)
        if actions is not None:  # a live client transaction's, or absorbed by a finished one
            self._act(actions, now)
        elif msg.wire.status == 100:  # hop by hop (RFC 3261 16.7 step 5): never relayed
            self._drop("stray 100 Trying", reason="stray 100", source=source)
        else:
            self._relay_stateless(msg, now, source)

    def _is_ours(self, host: str) -> bool:
        return any(host.strip("[]") == target.host for target in self.config.advertised)

    def _restore_from_memory(self, msg: Message, now: float) -> Restore | None:
        """A response without our Record-Route token: the PBX's tag finds the dialog, if any."""
        by_from = self._dialogs.recall(msg.call_id, msg.from_addr.tag, now)
        if by_from is not None:  # a response to the PBX's request
            return Restore("from", by_from.identity.original_from)
        by_to = self._dialogs.recall(msg.call_id, msg.to_addr.tag, now)
        if by_to is not None:  # a response to the trunk's request
            return Restore("to", by_to.identity.rewritten_from)
        return None

    def _relay_stateless(self, msg: Message, now: float, source: Source | None = None) -> None:
        """No transaction (2xx retransmission, restart): restore from our Record-Route token.
        Only toward the PBX, a trunk or a trusted network (issue 7): never an open relay."""
        if len(msg.vias) < 2:
            self._drop("response with only our Via: nowhere to relay", source=source)
            return
        upstream = msg.vias[1]
        host = upstream.params.get("received") or upstream.host
        rport = upstream.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else upstream.port or 5060
        unroutable = unroutable_reason(host)
        if unroutable is not None:
            self._drop(f"response toward {host[:64]}: {unroutable}", source=source)
            return
        host = host.strip("[]")
        if not self._is_peer(host):
            self._drop(
                f"stray {msg.wire.status} toward {host[:64]}",
                reason="stray response",
                source=source,
            )
            return
        restore = request_edits.restore_from_record_route(msg, self.config)
        data = upstream_bytes(msg, restore or self._restore_from_memory(msg, now))
        if data is None:
            return
        transport = VIA_TRANSPORTS.get(upstream.transport.upper(), "tcp")
        self.counters["responses_relayed_stateless"] += 1
        self._outbox.append(Outgoing(data, Target(transport, host, port)))

    def _is_peer(self, host: str) -> bool:
        """The PBX, a trunk, or a trusted network: where a stateless response may go."""
        config = self.config
        wanted = normalise_host(host)
        if wanted == normalise_host(config.pbx.host):
            return True
        if any(wanted == normalise_host(t.host) for t in config.trunks):
            return True
        if not config.trusted:
            return False
        address = ipaddress.ip_address(wanted)
        return any(address in network for network in config.trusted)


    # ----------------------------------------------------------------- untrusted sources
    def _refuse_untrusted(self, data: bytes, source: Source) -> None:
        """Judged from a bounded glance, never parsed: a short 403, or silence (issue 7).
        Over a stream the connection is closed after it: an outsider gets one answer. Counted
        and reported as events; the glue's log keeps one line per reason and interval."""
        seen = glance(data)
        close = source.transport != "udp"
        if is_scanner(seen.user_agent):
            self.counters["dropped_scanner"] += 1
            self._events.append(Dropped("scanner", source, seen.user_agent[:64]))
            self._close_silently(source, close)
            return
        response = None
        if seen.method != "ACK" and self.config.untrusted == "reply":  # ACK: RFC 3261 17.2.1
            response = short_forbidden(seen, len(data))
        if response is None:
            self.counters["dropped"] += 1
            self.counters["dropped_untrusted"] += 1
            self._events.append(Dropped("untrusted source", source, (seen.method or "?")[:32]))
            self._close_silently(source, close)
        else:
            self.counters["refused_403"] += 1
            self._events.append(
                Refused(403, "untrusted source", source, (seen.method or "?")[:32])
            )
            self._outbox.append(
                Outgoing(response, source.reply_target(), source.connection, close)
            )

    def _close_silently(self, source: Source, close: bool) -> None:
        if close:
            self._outbox.append(Outgoing(b"", source.reply_target(), source.connection, True))


def _is_own_to_tag(msg: Message, to_tag: str) -> bool:
    """`own_to_tag` of this request, hashed only when the tag can be one (`cp` + 10 hex)."""
    return (
        len(to_tag) == OWN_TO_TAG_LENGTH
        and to_tag.startswith(OWN_TO_TAG_PREFIX)
        and to_tag == own_to_tag(msg.call_id, msg.from_addr.tag)
    )


def _direction(target: Target, attempt: int) -> str:
    return target.transport if attempt == 0 else f"{target.transport}#{attempt}"


def _may_be_forwarded(msg: Message) -> bool:
    """Every request may be, and every response that carries our Via on top. A response whose
    top Via is not ours is dropped unread (RFC 3261 16.7: it was not for us), so only the top Via
    every message has parsed is ever read, and the rest of its grammar is left unchecked (lazy
    parsing, issue 6). A 100 Trying the glance declined is checked too (`trying_glance`: a
    live transaction's is absorbed unparsed); a stray one is then dropped, never relayed."""
    if msg.is_request:
        return True
    return (msg.top_via.branch or "").startswith(OUR_BRANCH_PREFIX)

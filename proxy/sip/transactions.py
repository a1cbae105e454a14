"""Server and client transaction records (RFC 3261 17), matched by branch like Kamailio's tm,
and their state machines as tables keyed by the RFC's state names (figures 5-8, RFC 6026).

Records are plain data: a server transaction names its client by key and a client its server
by key (no object points back at another), so an ended call is freed by reference counting.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Final

from proxy.sip.addresses import Source, Target
from proxy.sip.caller_id import ShownIdentity
from proxy.sip.edits import Edit
from proxy.sip.grammar import MAGIC_COOKIE
from proxy.sip.parse import Message
from proxy.sip.responses import ResponseBase
from proxy.sip.values import FrozenValue

OUR_BRANCH_PREFIX: Final = MAGIC_COOKIE + "cp"


class State(Enum):
    CALLING = "Calling"  # INVITE client, request sent (figure 5)
    TRYING = "Trying"  # non-INVITE client and server, before any response (figures 6, 8)
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # INVITE server: the ACK for its non-2xx arrived (figure 7)
    ACCEPTED = "Accepted"  # INVITE server after a 2xx (RFC 6026 7.1)
    TERMINATED = "Terminated"

    __hash__ = object.__hash__  # singletons: identity hash (tables are looked up per message)


class Input(Enum):
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    ACK = "ACK"
    TIMEOUT = "timeout"  # Timer B, F (or C): the proxy answers upstream itself
    TRANSPORT_ERROR = "transport error"
    END = "end"  # Timer D, K, H, I, J or L: the transaction has absorbed what it had to

    __hash__ = object.__hash__


Machine = dict[tuple[State, Input], State]
_S = State
_I = Input

# Figure 5. A proxy ends the client on a 2xx (its retransmissions go end to end, RFC 3261
# 16.7 step 5); after a timeout it lingers in Completed to ACK and absorb a late non-2xx.
INVITE_CLIENT: Final[Machine] = {
    (_S.CALLING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.CALLING, _I.SUCCESS): _S.TERMINATED,
    (_S.PROCEEDING, _I.SUCCESS): _S.TERMINATED,
    (_S.CALLING, _I.FAILURE): _S.COMPLETED,
    (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
    (_S.COMPLETED, _I.FAILURE): _S.COMPLETED,
    (_S.CALLING, _I.TIMEOUT): _S.COMPLETED,
    (_S.PROCEEDING, _I.TIMEOUT): _S.COMPLETED,
    (_S.CALLING, _I.TRANSPORT_ERROR): _S.TERMINATED,
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _S.TERMINATED,
    (_S.COMPLETED, _I.END): _S.TERMINATED,
}
# Figure 6.
NON_INVITE_CLIENT: Final[Machine] = {
    (_S.TRYING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.TRYING, _I.SUCCESS): _S.COMPLETED,
    (_S.PROCEEDING, _I.SUCCESS): _S.COMPLETED,
    (_S.TRYING, _I.FAILURE): _S.COMPLETED,
    (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
    (_S.TRYING, _I.TIMEOUT): _S.COMPLETED,
    (_S.PROCEEDING, _I.TIMEOUT): _S.COMPLETED,
    (_S.TRYING, _I.TRANSPORT_ERROR): _S.TERMINATED,
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _S.TERMINATED,
    (_S.COMPLETED, _I.END): _S.TERMINATED,
}
# Figure 7 with RFC 6026's Accepted state; the inputs are the responses the server *sends*.
INVITE_SERVER: Final[Machine] = {
    (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.PROCEEDING, _I.SUCCESS): _S.ACCEPTED,
    (_S.ACCEPTED, _I.SUCCESS): _S.ACCEPTED,  # a late 2xx from another branch still goes up
    (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
    (_S.COMPLETED, _I.ACK): _S.CONFIRMED,
    (_S.COMPLETED, _I.END): _S.TERMINATED,  # Timer H: the ACK never came
    (_S.CONFIRMED, _I.END): _S.TERMINATED,  # Timer I
    (_S.ACCEPTED, _I.END): _S.TERMINATED,  # Timer L
}
# Figure 8.
NON_INVITE_SERVER: Final[Machine] = {
    (_S.TRYING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
    (_S.TRYING, _I.SUCCESS): _S.COMPLETED,
    (_S.PROCEEDING, _I.SUCCESS): _S.COMPLETED,
    (_S.TRYING, _I.FAILURE): _S.COMPLETED,
    (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
    (_S.COMPLETED, _I.END): _S.TERMINATED,  # Timer J
}


def next_state(machine: Machine, state: State, event: Input) -> State:
    """The table's next state; an input the table does not list (a late retransmission, a
    response after the end) leaves the state as it is."""
    return machine.get((state, event), state)


def response_input(status: int) -> Input:
    if status < 200:
        return Input.PROVISIONAL
    return Input.SUCCESS if status < 300 else Input.FAILURE


ServerKey = tuple[str, ...]
ClientKey = tuple[str, str]


def server_key(msg: Message, method: str | None = None) -> ServerKey:
    """RFC 3261 17.2.3 matching: branch + sent-by + method (ACK and CANCEL look for the INVITE
    when `method` says so); RFC 2543 requests without the magic cookie use dialog fields."""
    top = msg.vias[0]
    branch = top.branch or ""
    wanted = method or msg.method
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, top.sent_by, wanted)
    from_tag = msg.from_addr.tag or ""
    return ("2543", msg.call_id, str(msg.cseq_number), from_tag, top.sent_by, branch, wanted)


def outgoing_branch(key: ServerKey, direction: str) -> str:
    """Deterministic, so a CANCEL gets its INVITE's branch and a restarted proxy keeps branches."""
    digest = hashlib.blake2b("\x00".join((direction, *key)).encode("latin-1"), digest_size=10)
    return OUR_BRANCH_PREFIX + digest.hexdigest()


class Restore(FrozenValue):
    """How a response relayed upstream gets the sender's identity back: header and value."""

    __match_args__ = ("header", "value")
    __slots__ = __match_args__

    header: str  # "from" or "to"
    value: bytes

    def __init__(self, header: str, value: bytes) -> None:
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "value", value)


class ForwardPlan(FrozenValue):
    """What the core needs to build the request again for another next hop (failover): plain
    inputs, no closure. The request and its source are the server transaction's."""

    __match_args__ = ("side", "shown", "extra_edits", "restore", "in_dialog", "inbound_trunk")
    __slots__ = __match_args__

    side: str  # the side the request came from
    shown: ShownIdentity | None  # the caller ID decided for the call, if any
    extra_edits: tuple[Edit, ...]  # edits that do not depend on the next hop
    restore: Restore | None  # for a request whose identity edits do not depend on the hop
    in_dialog: bool
    inbound_trunk: int  # the trunk a request from the trunk side came from

    def __init__(
        self,
        side: str,
        shown: ShownIdentity | None,
        extra_edits: tuple[Edit, ...],
        restore: Restore | None,
        in_dialog: bool,
        inbound_trunk: int,
    ) -> None:
        object.__setattr__(self, "side", side)
        object.__setattr__(self, "shown", shown)
        object.__setattr__(self, "extra_edits", extra_edits)
        object.__setattr__(self, "restore", restore)
        object.__setattr__(self, "in_dialog", in_dialog)
        object.__setattr__(self, "inbound_trunk", inbound_trunk)


class ServerTransaction:
    """A server transaction's record. A plain class with its own `__init__` (not a dataclass,
    whose generated `__init__` mypyc cannot compile): one is made per request. Compared by
    identity; the keyword arguments are the dataclass's fields, as before."""

    __slots__ = (
        "alternatives",
        "answer_base",
        "attempt",
        "cancelled",
        "client_key",
        "dialog",
        "key",
        "last_response",
        "method",
        "plan",
        "reply_to",
        "request",
        "responded",
        "retransmit_interval",
        "source",
        "started",
        "state",
        "trying_base",
    )

    def __init__(
        self,
        key: ServerKey,
        method: str,
        source: Source,
        request: Message | None,
        started: float,
        answer_base: ResponseBase | None = None,
        trying_base: ResponseBase | None = None,
        dialog: tuple[str, str] | None = None,
        state: State = State.TRYING,
        last_response: bytes | None = None,
        client_key: ClientKey | None = None,
        retransmit_interval: float = 0.0,
        cancelled: bool = False,
        responded: bool = False,
        plan: ForwardPlan | None = None,
        alternatives: list[Target] | None = None,
        attempt: int = 0,
    ) -> None:
        self.key = key
        self.method = method
        self.source = source
        # The parsed request, while the proxy may still have to answer it or build it again
        # for another trunk; released with the plan once a final went upstream (what a
        # transaction holds for Timers H/I/J/L is then a few values: cheap for memory and the
        # garbage collector).
        self.request = request
        self.started = started  # the `now` the request came in at (latency events)
        # What our own final answer copies from the request, once the request itself is
        # released (no other trunk left to build it for): the pending call then holds bytes.
        self.answer_base = answer_base
        # The same, made once for the 100 Trying of an INVITE (RFC 3261 17.2.1), reused then.
        self.trying_base = trying_base
        # The dialog memory's key (Call-ID, PBX tag) of an outbound INVITE, until its final
        # answer: a call that never got a 2xx is forgotten then (issue 7: no memory for failed
        # calls).
        self.dialog = dialog
        self.state = state
        self.last_response = last_response
        self.client_key = client_key
        self.retransmit_interval = retransmit_interval
        self.cancelled = cancelled
        self.responded = responded  # a response went upstream already (first-response latency)
        # Failover: the next hops still to try, and the inputs to build the request for them.
        self.plan = plan
        self.alternatives: list[Target] = [] if alternatives is None else alternatives
        self.attempt = attempt
        self.reply_to = source.reply_target()  # where responses go (made once: RFC 3261 18.2.2)

    def __repr__(self) -> str:
        return (
            f"ServerTransaction(key={self.key!r}, method={self.method!r}, "
            f"state={self.state!r}, source={self.source!r})"
        )

    @property
    def final_sent(self) -> bool:
        return self.state in (State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.TERMINATED)

    @property
    def machine(self) -> Machine:
        return INVITE_SERVER if self.method == "INVITE" else NON_INVITE_SERVER


class ClientTransaction:
    """A client transaction's record; a plain class like ServerTransaction (one per hop)."""

    __slots__ = (
        "branch",
        "cancel_pending",
        "key",
        "method",
        "probe",
        "request",
        "restore",
        "retransmit_interval",
        "server_key",
        "state",
        "target",
    )

    def __init__(
        self,
        branch: str,
        method: str,
        target: Target,
        request: bytes,
        server_key: ServerKey | None,
        restore: Restore | None = None,
        probe: int | None = None,
        state: State = State.TRYING,
        cancel_pending: bool = False,
        retransmit_interval: float = 0.0,
    ) -> None:
        self.branch = branch
        self.method = method
        self.target = target
        self.request = request
        self.server_key = server_key
        self.restore = restore
        self.probe = probe  # an OPTIONS keepalive to this trunk index (no server transaction)
        if method == "INVITE" and state is State.TRYING:
            state = State.CALLING
        self.state = state
        self.cancel_pending = cancel_pending
        self.retransmit_interval = retransmit_interval
        self.key: ClientKey = (branch, method)  # made once, looked up per response

    def __repr__(self) -> str:
        return (
            f"ClientTransaction(branch={self.branch!r}, method={self.method!r}, "
            f"state={self.state!r}, target={self.target!r})"
        )

    @property
    def reliable(self) -> bool:
        return self.target.transport != "udp"

    @property
    def machine(self) -> Machine:
        return INVITE_CLIENT if self.method == "INVITE" else NON_INVITE_CLIENT

    @property
    def pending(self) -> bool:
        """Still waiting for a final response (Calling/Trying or Proceeding)."""
        return self.state in (State.CALLING, State.TRYING, State.PROCEEDING)

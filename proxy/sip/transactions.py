"""Server and client transaction records (RFC 3261 17), matched by branch like Kamailio's tm,
and their state machines as tables keyed by the RFC's state names (figures 5-8, RFC 6026).

Records are plain data: a server transaction names its client by key and a client its server
by key (no object points back at another), so an ended call is freed by reference counting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

from proxy.sip.addresses import Source, Target
from proxy.sip.caller_id import ShownIdentity
from proxy.sip.edits import Edit
from proxy.sip.grammar import MAGIC_COOKIE
from proxy.sip.message import SipMessage
from proxy.sip.parse import Message
from proxy.sip.responses import ResponseBase

OUR_BRANCH_PREFIX = MAGIC_COOKIE + "cp"


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
INVITE_CLIENT: Machine = {
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
NON_INVITE_CLIENT: Machine = {
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
INVITE_SERVER: Machine = {
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
NON_INVITE_SERVER: Machine = {
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


@dataclass(frozen=True, slots=True)
class Restore:
    """How a response relayed upstream gets the sender's identity back: header and value."""

    header: str  # "from" or "to"
    value: bytes


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    """What the core needs to build the request again for another next hop (failover): plain
    inputs, no closure. The request and its source are the server transaction's."""

    side: str  # the side the request came from
    shown: ShownIdentity | None  # the caller ID decided for the call, if any
    extra_edits: tuple[Edit, ...]  # edits that do not depend on the next hop
    restore: Restore | None  # for a request whose identity edits do not depend on the hop
    in_dialog: bool
    inbound_trunk: int  # the trunk a request from the trunk side came from


@dataclass(frozen=True, slots=True)
class SentRequest:
    """Enough of a forwarded request to build its CANCEL or ACK later (RFC 3261 9.1, 17.1.1.3)
    without parsing the bytes we built: the incoming message, the edits made to it and our
    Via. Only looked at when a CANCEL or a non-2xx ACK is actually needed."""

    wire: SipMessage
    edits: tuple[Edit, ...]
    via: bytes


@dataclass(slots=True)
class ServerTransaction:
    key: ServerKey
    method: str
    source: Source
    # The parsed request, while the proxy may still have to answer it or build it again for
    # another trunk; released with the plan once a final went upstream (what a transaction holds
    # for Timers H/I/J/L is then a few values: cheap for memory and the garbage collector).
    request: Message | None
    started: float  # the `now` the request came in at (latency events)
    # What our own final answer copies from the request, once the request itself is released
    # (no other trunk left to build it for): the pending call then holds bytes, not a parse.
    answer_base: ResponseBase | None = None
    # The same, made once for the 100 Trying of an INVITE (RFC 3261 17.2.1) and reused then.
    trying_base: ResponseBase | None = None
    # The dialog memory's key (Call-ID, PBX tag) of an outbound INVITE, until its final answer:
    # a call that never got a 2xx is forgotten then (issue 7: no memory for failed calls).
    dialog: tuple[str, str] | None = None
    state: State = State.TRYING
    last_response: bytes | None = None
    client_key: ClientKey | None = None
    retransmit_interval: float = 0.0
    cancelled: bool = False
    responded: bool = False  # a response went upstream already (first-response latency)
    # Failover: the next hops still to try, and the inputs to build the request for them.
    plan: ForwardPlan | None = None
    alternatives: list[Target] = field(default_factory=list)
    attempt: int = 0
    reply_to: Target = field(init=False)  # where responses go (made once: RFC 3261 18.2.2)

    def __post_init__(self) -> None:
        self.reply_to = self.source.reply_target()

    @property
    def final_sent(self) -> bool:
        return self.state in (State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.TERMINATED)

    @property
    def machine(self) -> Machine:
        return INVITE_SERVER if self.method == "INVITE" else NON_INVITE_SERVER


@dataclass(slots=True)
class ClientTransaction:
    branch: str
    method: str
    target: Target
    request: bytes
    server_key: ServerKey | None
    restore: Restore | None = None
    sent: SentRequest | None = None
    probe: int | None = None  # an OPTIONS keepalive to this trunk index (no server transaction)
    state: State = State.TRYING
    cancel_pending: bool = False
    retransmit_interval: float = 0.0
    key: ClientKey = field(init=False)  # (branch, method): made once, looked up per response

    def __post_init__(self) -> None:
        self.key = (self.branch, self.method)
        if self.method == "INVITE" and self.state is State.TRYING:
            self.state = State.CALLING

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

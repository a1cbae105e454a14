"""What happened in the core, as plain values: the glue turns them into logs, metrics and the
audit line (the core itself logs nothing). Frozen and slotted: cheap, hashable, no cycles."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.sip.addresses import Source, Target


@dataclass(frozen=True, slots=True)
class CallerIdDecided:
    """An outbound INVITE's caller ID, decided once per call (whichever trunk takes it)."""

    call_id: str
    user: str
    destination: str
    number: str
    name: str | None
    reason: str
    rules_version: str
    trunk: Target  # the first trunk tried
    step: str = ""  # "step 1".."step 4", "emergency", "local presence" (rules' resolution)
    privacy: bool = False  # withheld: From anonymous, Privacy: id, the number in PAI only


@dataclass(frozen=True, slots=True)
class Refused:
    """A request answered with an error by the proxy itself."""

    status: int
    reason: str
    source: Source
    method: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message neither relayed nor answered. `reason` is a short fixed label (metrics); the
    `detail` says more about this one."""

    reason: str
    source: Source | None  # None: a message of ours (e.g. a response with only our Via)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A request sent on statefully (a new client transaction) toward `trunk`/the PBX."""

    method: str
    destination: Target
    side: str  # the side it went to: "pbx" or "trunk"


@dataclass(frozen=True, slots=True)
class FailedOver:
    """A trunk failed before answering; the request goes to the next one."""

    method: str
    from_hop: Target
    to_hop: Target
    status: int | None  # the failing final response, or None for a timeout or transport error
    cause: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No final answer in time (Timer B, C or F): the proxy answered upstream itself."""

    method: str
    destination: Target
    timer: str
    status: int


@dataclass(frozen=True, slots=True)
class Answered:
    """The proxy answered upstream itself for another reason than a timeout (503, 502, 513)."""

    method: str
    destination: Target
    status: int
    cause: str


@dataclass(frozen=True, slots=True)
class Shed:
    """A new INVITE refused with 503 + Retry-After because the proxy is overloaded."""

    source: Source
    cause: str  # "transactions" (over max_transactions) or "loop lag"
    retry_after: int


@dataclass(frozen=True, slots=True)
class ResponseRelayed:
    """A response sent upstream along a transaction, with the latency measured from the times
    passed in: the first one gives request -> first response, a final request -> final."""

    method: str
    status: int
    hop: Target  # where it came from
    since_request: float  # seconds from the request to this response (times passed in)
    first: bool  # the first response relayed for this request


@dataclass(frozen=True, slots=True)
class TrunkProbed:
    """An OPTIONS keepalive probe's outcome: its answer's status, or None (none came)."""

    trunk: Target
    status: int | None


@dataclass(frozen=True, slots=True)
class TrunkStateChanged:
    """A trunk went down (probes failed) or came back up."""

    trunk: Target
    up: bool


Event = (
    CallerIdDecided
    | Refused
    | Dropped
    | Forwarded
    | FailedOver
    | TimedOut
    | Answered
    | Shed
    | ResponseRelayed
    | TrunkProbed
    | TrunkStateChanged
)

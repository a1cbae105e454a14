"""What happened in the core, as plain values: the glue turns them into logs, metrics and the
audit line (the core itself logs nothing). Frozen and slotted: cheap, hashable, no cycles."""

from __future__ import annotations

from proxy.sip.addresses import Source, Target
from proxy.sip.values import FrozenValue


class CallerIdDecided(FrozenValue):
    """An outbound INVITE's caller ID, decided once per call (whichever trunk takes it)."""

    __match_args__ = (
        "call_id",
        "user",
        "destination",
        "number",
        "name",
        "reason",
        "rules_version",
        "trunk",
        "step",
        "privacy",
    )
    __slots__ = __match_args__

    call_id: str
    user: str
    destination: str
    number: str
    name: str | None
    reason: str
    rules_version: str
    trunk: Target  # the first trunk tried
    step: str  # "step 1".."step 4", "emergency", "local presence" (rules' resolution)
    privacy: bool  # withheld: From anonymous, Privacy: id, the number in PAI only

    def __init__(
        self,
        call_id: str,
        user: str,
        destination: str,
        number: str,
        name: str | None,
        reason: str,
        rules_version: str,
        trunk: Target,
        step: str = "",
        privacy: bool = False,
    ) -> None:
        object.__setattr__(self, "call_id", call_id)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "destination", destination)
        object.__setattr__(self, "number", number)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "rules_version", rules_version)
        object.__setattr__(self, "trunk", trunk)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "privacy", privacy)


class Refused(FrozenValue):
    """A request answered with an error by the proxy itself."""

    __match_args__ = ("status", "reason", "source", "method")
    __slots__ = __match_args__

    status: int
    reason: str
    source: Source
    method: str

    def __init__(self, status: int, reason: str, source: Source, method: str) -> None:
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "method", method)


class Dropped(FrozenValue):
    """A message neither relayed nor answered. `reason` is a short fixed label (metrics); the
    `detail` says more about this one."""

    __match_args__ = ("reason", "source", "detail")
    __slots__ = __match_args__

    reason: str
    source: Source | None  # None: a message of ours (e.g. a response with only our Via)
    detail: str

    def __init__(self, reason: str, source: Source | None, detail: str = "") -> None:
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "detail", detail)


class Forwarded(FrozenValue):
    """A request sent on statefully (a new client transaction) toward `trunk`/the PBX."""

    __match_args__ = ("method", "destination", "side")
    __slots__ = __match_args__

    method: str
    destination: Target
    side: str  # the side it went to: "pbx" or "trunk"

    def __init__(self, method: str, destination: Target, side: str) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "destination", destination)
        object.__setattr__(self, "side", side)


class FailedOver(FrozenValue):
    """A trunk failed before answering; the request goes to the next one."""

    __match_args__ = ("method", "from_hop", "to_hop", "status", "cause")
    __slots__ = __match_args__

    method: str
    from_hop: Target
    to_hop: Target
    status: int | None  # the failing final response, or None for a timeout or transport error
    cause: str

    def __init__(
        self,
        method: str,
        from_hop: Target,
        to_hop: Target,
        status: int | None,
        cause: str,
    ) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "from_hop", from_hop)
        object.__setattr__(self, "to_hop", to_hop)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "cause", cause)


class TimedOut(FrozenValue):
    """No final answer in time (Timer B, C or F): the proxy answered upstream itself."""

    __match_args__ = ("method", "destination", "timer", "status")
    __slots__ = __match_args__

    method: str
    destination: Target
    timer: str
    status: int

    def __init__(self, method: str, destination: Target, timer: str, status: int) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "destination", destination)
        object.__setattr__(self, "timer", timer)
        object.__setattr__(self, "status", status)


class Answered(FrozenValue):
    """The proxy answered upstream itself for another reason than a timeout (503, 502, 513)."""

    __match_args__ = ("method", "destination", "status", "cause")
    __slots__ = __match_args__

    method: str
    destination: Target
    status: int
    cause: str

    def __init__(self, method: str, destination: Target, status: int, cause: str) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "destination", destination)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "cause", cause)


class Shed(FrozenValue):
    """A new INVITE refused with 503 + Retry-After because the proxy is overloaded."""

    __match_args__ = ("source", "cause", "retry_after")
    __slots__ = __match_args__

    source: Source
    cause: str  # "transactions" (over max_transactions) or "loop lag"
    retry_after: int

    def __init__(self, source: Source, cause: str, retry_after: int) -> None:
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "cause", cause)
        object.__setattr__(self, "retry_after", retry_after)


class ResponseRelayed(FrozenValue):
    """A response sent upstream along a transaction, with the latency measured from the times
    passed in: the first one gives request -> first response, a final request -> final."""

    __match_args__ = ("method", "status", "hop", "since_request", "first")
    __slots__ = __match_args__

    method: str
    status: int
    hop: Target  # where it came from
    since_request: float  # seconds from the request to this response (times passed in)
    first: bool  # the first response relayed for this request

    def __init__(
        self,
        method: str,
        status: int,
        hop: Target,
        since_request: float,
        first: bool,
    ) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "hop", hop)
        object.__setattr__(self, "since_request", since_request)
        object.__setattr__(self, "first", first)


class TrunkProbed(FrozenValue):
    """An OPTIONS keepalive probe's outcome: its answer's status, or None (none came)."""

    __match_args__ = ("trunk", "status")
    __slots__ = __match_args__

    trunk: Target
    status: int | None

    def __init__(self, trunk: Target, status: int | None) -> None:
        object.__setattr__(self, "trunk", trunk)
        object.__setattr__(self, "status", status)


class TrunkStateChanged(FrozenValue):
    """A trunk went down (probes failed) or came back up."""

    __match_args__ = ("trunk", "up")
    __slots__ = __match_args__

    trunk: Target
    up: bool

    def __init__(self, trunk: Target, up: bool) -> None:
        object.__setattr__(self, "trunk", trunk)
        object.__setattr__(self, "up", up)


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

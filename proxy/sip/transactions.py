"""Server and client transaction records (RFC 3261 17), matched by branch like Kamailio's tm."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from proxy.sip.addresses import Source, Target
from proxy.sip.grammar import MAGIC_COOKIE
from proxy.sip.parse import Message

OUR_BRANCH_PREFIX = MAGIC_COOKIE + "cp"


class State(Enum):
    TRYING = "trying"  # client: calling / trying; server: proceeding before any response
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026: a 2xx went upstream
    TERMINATED = "terminated"


ServerKey = tuple[str, ...]


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


@dataclass(slots=True)
class ServerTransaction:
    key: ServerKey
    method: str
    source: Source
    request: Message
    state: State = State.TRYING
    last_response: bytes | None = None
    final_sent: bool = False
    client: ClientTransaction | None = None
    retransmit_interval: float = 0.0
    cancelled: bool = False
    # Failover: the next hops still to try, and how to build the request for one of them.
    alternatives: list[Target] = field(default_factory=list)
    retarget: Callable[[Target, int], ClientTransaction] | None = None
    attempt: int = 0


@dataclass(slots=True)
class ClientTransaction:
    branch: str
    method: str
    target: Target
    request: bytes
    server: ServerTransaction | None
    restore: Restore | None = None
    state: State = State.TRYING
    cancel_pending: bool = False
    retransmit_interval: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.branch, self.method)

    @property
    def reliable(self) -> bool:
        return self.target.transport != "udp"

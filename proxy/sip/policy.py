"""What the core asks of the caller-ID rules, without knowing how they are stored or loaded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from proxy.sip.addresses import Target

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PBX_SIDE, TRUNK_SIDE = "pbx", "trunk"


@dataclass(frozen=True, slots=True)
class CallerIdDecision:
    number: str
    name: str | None
    reason: str
    rules_version: str


class CallerIdPolicy(Protocol):
    def decide(self, user: str, destination: str) -> CallerIdDecision:
        """The decision of the rules current at this instant; must not raise."""
        ...


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The core's view of the deployment. `advertised` is what goes into Via and Record-Route."""

    advertised: tuple[Target, ...]  # one per listen address and transport
    pbx: Target
    trunk: Target
    secret: bytes
    trusted: tuple[IPNetwork, ...] = field(default=())
    extra_trunks: tuple[Target, ...] = field(default=())
    # The host shown to each side when they differ (a LAN toward the PBX, a public address or a
    # NAT's toward the trunk); None: the listen address. Also listed in `advertised`.
    pbx_facing: str | None = None
    trunk_facing: str | None = None
    # A request from any other source: "reply" a short 403 (never larger than the request), or
    # "drop" it without a word (issue 7; the README's "Trust comes before work" says why reply).
    untrusted: str = "reply"

    @property
    def trunks(self) -> tuple[Target, ...]:
        """Outbound calls try them in order: the next one when a trunk fails (5xx, 408,
        silence, unreachable) before it answered anything."""
        return (self.trunk, *self.extra_trunks)

    def is_trunk(self, host: str, port: int) -> bool:
        return any((t.host, t.port) == (host, port) for t in self.trunks)

    def side_of_target(self, target: Target) -> str:
        return TRUNK_SIDE if self.is_trunk(target.host, target.port) else PBX_SIDE

    def facing(self, side: str, transport: str, peer_host: str) -> Target:
        """Our address as the `side` must see it (Via, Record-Route), for that transport and the
        peer's address family."""
        v6 = ":" in peer_host
        same = [t for t in self.advertised if t.transport == transport and (":" in t.host) == v6]
        candidates = same or [self.advertised[0]]
        host = self.trunk_facing if side == TRUNK_SIDE else self.pbx_facing
        if host is None:
            return candidates[0]
        for target in candidates:
            if target.host == host:
                return target
        return Target(transport, host, candidates[0].port)

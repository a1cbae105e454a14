"""What the core asks of the caller-ID rules, without knowing how they are stored or loaded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from proxy.sip.addresses import Target

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    @property
    def trunks(self) -> tuple[Target, ...]:
        """Outbound calls try them in order: the next one when a trunk fails (5xx, 408,
        silence, unreachable) before it answered anything."""
        return (self.trunk, *self.extra_trunks)

    def is_trunk(self, host: str, port: int) -> bool:
        return any((t.host, t.port) == (host, port) for t in self.trunks)

    def advertised_for(self, transport: str, family_host: str) -> Target:
        v6 = ":" in family_host
        for target in self.advertised:
            if target.transport == transport and (":" in target.host) == v6:
                return target
        return self.advertised[0]

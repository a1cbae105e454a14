"""What the core asks of the caller-ID rules, without knowing how they are stored or loaded."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from proxy.sip.addresses import Target

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PBX_SIDE, TRUNK_SIDE = "pbx", "trunk"


@dataclass(frozen=True, slots=True)
class TrunkIdentity:
    """How one trunk wants the shown number written (issue 9 item 4)."""

    user: str
    """The user part of From/P-Asserted-Identity: +442071234567, 442071234567, 02071234567..."""
    host: str | None = None
    """A fixed domain (the provider's realm); None: the trunk's host or, with keep_pbx_host,
    the host of the PBX's From URI."""
    keep_pbx_host: bool = False


@dataclass(frozen=True, slots=True)
class CallerIdDecision:
    number: str
    """E.164. For a withheld call (`privacy`), the number P-Asserted-Identity carries."""
    name: str | None
    reason: str
    rules_version: str
    step: str = ""
    privacy: bool = False
    """Withhold the caller ID: anonymous From, Privacy: id (RFC 3323), the number in PAI."""
    user: str = ""
    """The calling user the rules decided for (read from where user_source says)."""
    trunks: Mapping[int, TrunkIdentity] = field(default_factory=lambda: _NO_TRUNKS)
    """Per trunk index (0 = the first trunk); a trunk not in it gets `other_trunks`."""
    other_trunks: TrunkIdentity | None = None
    """None: the E.164 number at the trunk's host."""

    def for_trunk(self, index: int) -> TrunkIdentity:
        identity = self.trunks.get(index, self.other_trunks)
        return identity if identity is not None else TrunkIdentity(self.number)


_NO_TRUNKS: Mapping[int, TrunkIdentity] = MappingProxyType({})


class CallFacts(Protocol):
    """What the rules may ask about an outbound INVITE (read from its header spans)."""

    @property
    def destination(self) -> str: ...

    @property
    def privacy_requested(self) -> bool:
        """The INVITE carries Privacy: id (the user dialled *31# or similar)."""
        ...

    @property
    def display_name(self) -> str | None:
        """The display name of the PBX's From, unquoted."""
        ...

    def user_at(self, place: str) -> str | None:
        """The user part found at `place` ("from", "p-preferred-identity", "remote-party-id",
        "contact" or a header name such as "x-extension"), None when absent."""
        ...


@dataclass(frozen=True, slots=True)
class PlainCall:
    """CallFacts given directly (explain, tests, benchmarks): the user is in From."""

    user: str
    destination: str
    privacy_requested: bool = False
    display_name: str | None = None
    found: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def user_at(self, place: str) -> str | None:
        return self.user if place == "from" else self.found.get(place)


class CallerIdPolicy(Protocol):
    def decide_call(self, call: CallFacts) -> CallerIdDecision:
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
    # Other instances sharing `secret` behind one dispatcher (`--peer`): their Record-Route
    # entries count as ours, so that any instance carries on the dialogs of one that died.
    peers: tuple[Target, ...] = field(default=())

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

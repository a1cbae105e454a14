"""What the core asks of the caller-ID rules, without knowing how they are stored or loaded."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from proxy.sip.addresses import Target
from proxy.sip.identity import IdentitySeal
from proxy.sip.our_address import OurAddress
from proxy.sip.values import FrozenValue

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PBX_SIDE, TRUNK_SIDE = "pbx", "trunk"


class TrunkIdentity(FrozenValue):
    """How one trunk wants the shown number written (issue 9 item 4)."""

    __match_args__ = ("user", "host", "keep_pbx_host")
    __slots__ = __match_args__

    user: str
    """The user part of From/P-Asserted-Identity: +442071234567, 442071234567, 02071234567..."""
    host: str | None
    """A fixed domain (the provider's realm); None: the trunk's host or, with keep_pbx_host,
    the host of the PBX's From URI."""
    keep_pbx_host: bool

    def __init__(self, user: str, host: str | None = None, keep_pbx_host: bool = False) -> None:
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "keep_pbx_host", keep_pbx_host)


_NO_TRUNKS: Final[Mapping[int, TrunkIdentity]] = MappingProxyType({})


class CallerIdDecision(FrozenValue):
    __match_args__ = (
        "number",
        "name",
        "reason",
        "rules_version",
        "step",
        "privacy",
        "user",
        "trunks",
        "other_trunks",
    )
    __slots__ = __match_args__

    number: str
    """E.164. For a withheld call (`privacy`), the number P-Asserted-Identity carries."""
    name: str | None
    reason: str
    rules_version: str
    step: str
    privacy: bool
    """Withhold the caller ID: anonymous From, Privacy: id (RFC 3323), the number in PAI."""
    user: str
    """The calling user the rules decided for (read from where user_source says)."""
    trunks: Mapping[int, TrunkIdentity]
    """Per trunk index (0 = the first trunk); a trunk not in it gets `other_trunks`."""
    other_trunks: TrunkIdentity | None
    """None: the E.164 number at the trunk's host."""

    def __init__(
        self,
        number: str,
        name: str | None,
        reason: str,
        rules_version: str,
        step: str = "",
        privacy: bool = False,
        user: str = "",
        trunks: Mapping[int, TrunkIdentity] = _NO_TRUNKS,
        other_trunks: TrunkIdentity | None = None,
    ) -> None:
        object.__setattr__(self, "number", number)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "rules_version", rules_version)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "privacy", privacy)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "trunks", trunks)
        object.__setattr__(self, "other_trunks", other_trunks)

    def for_trunk(self, index: int) -> TrunkIdentity:
        identity = self.trunks.get(index, self.other_trunks)
        return identity if identity is not None else TrunkIdentity(self.number)


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
    # Bounded state (issue 7): above max_transactions live server transactions new INVITEs get
    # 503 + Retry-After; the dialog memory keeps at most max_dialogs entries.
    max_transactions: int = 3_000  # calls in setup; ~12 KB each (issue 7: RSS bound)
    max_dialogs: int = 100_000
    retry_after: int = 5  # seconds, in the 503 of a shed INVITE
    # Sides ("pbx", "trunk") whose UDP next hop also takes TCP: a request over 1300 bytes goes
    # there over TCP (RFC 3261 18.1.1).
    large_over_tcp: frozenset[str] = field(default=frozenset())
    # Trunk availability (issue 8): an INVITE a trunk does not answer even provisionally within
    # no_answer_timeout seconds goes to the next trunk (None: only Timer B); these finals from a
    # trunk fail over too (never 4xx/6xx, never after a CANCEL).
    no_answer_timeout: float | None = 2.0
    failover_statuses: frozenset[int] = field(default=frozenset((408, 500, 502, 503, 504)))
    # OPTIONS keepalive probes to each trunk every probe_interval seconds (None: no probes); down
    # after probe_failures unanswered in a row, up after probe_successes answered.
    probe_interval: float | None = None
    probe_failures: int = 3
    probe_successes: int = 2
    round_robin: bool = False  # new outbound calls start at the next trunk each time
    # Derived: the trunks' (host, port), looked up for every message (classification).
    _trunk_addresses: frozenset[tuple[str, int]] = field(
        init=False, repr=False, compare=False, default=frozenset()
    )
    # Derived: `facing` for each (side, transport, IPv6?) of the transports in `advertised`.
    _facing_table: dict[tuple[str, str, bool], Target] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    # Derived: the same as OurAddress, with the Via and Record-Route bytes formatted once.
    _address_table: dict[tuple[str, str, bool], OurAddress] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    # Derived: (host, port) of `advertised` and `peers`: a Route or Request-URI naming one is ours.
    _our_hostports: frozenset[tuple[str, int]] = field(
        init=False, repr=False, compare=False, default=frozenset()
    )
    # Derived: the keys of the dialog-identity token, from `secret` once.
    identity_seal: IdentitySeal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        addresses = frozenset((t.host, t.port) for t in (self.trunk, *self.extra_trunks))
        object.__setattr__(self, "_trunk_addresses", addresses)
        ours = frozenset((t.host, t.port) for t in (*self.advertised, *self.peers))
        object.__setattr__(self, "_our_hostports", ours)
        object.__setattr__(self, "identity_seal", IdentitySeal(self.secret))
        transports = {t.transport for t in self.advertised}  # none: facing() raises as before
        self._facing_table.update(
            ((side, transport, v6), self._compute_facing(side, transport, v6))
            for side in (PBX_SIDE, TRUNK_SIDE)
            for transport in transports
            for v6 in (False, True)
        )
        self._address_table.update(
            (key, OurAddress.of(target)) for key, target in self._facing_table.items()
        )
    # A request from any other source: "reply" a short 403 (never larger than the request), or
    # "drop" it without a word (issue 7; the README's "Trust comes before work" says why reply).
    untrusted: str = "reply"

    @property
    def trunks(self) -> tuple[Target, ...]:
        """Outbound calls try them in order: the next one when a trunk fails (5xx, 408,
        silence, unreachable) before it answered anything."""
        return (self.trunk, *self.extra_trunks)

    def is_trunk(self, host: str, port: int) -> bool:
        return (host, port) in self._trunk_addresses

    def side_of_target(self, target: Target) -> str:
        return TRUNK_SIDE if self.is_trunk(target.host, target.port) else PBX_SIDE

    def facing(self, side: str, transport: str, peer_host: str) -> Target:
        """Our address as the `side` must see it (Via, Record-Route), for that transport and the
        peer's address family."""
        v6 = ":" in peer_host
        found = self._facing_table.get((side, transport, v6))  # computed once, at creation
        return found if found is not None else self._compute_facing(side, transport, v6)

    def facing_address(self, side: str, transport: str, peer_host: str) -> OurAddress:
        """`facing`, with our Via and Record-Route bytes already formatted."""
        found = self._address_table.get((side, transport, ":" in peer_host))
        if found is None:
            found = OurAddress.of(self.facing(side, transport, peer_host))
        return found

    def is_our_hostport(self, host: str, port: int) -> bool:
        """Literally one of `advertised` or `peers` (host as written there, lower case)."""
        return (host, port) in self._our_hostports

    def _compute_facing(self, side: str, transport: str, v6: bool) -> Target:
        same = [t for t in self.advertised if t.transport == transport and (":" in t.host) == v6]
        candidates = same or [self.advertised[0]]
        host = self.trunk_facing if side == TRUNK_SIDE else self.pbx_facing
        if host is None:
            return candidates[0]
        for target in candidates:
            if target.host == host:
                return target
        return Target(transport, host, candidates[0].port)

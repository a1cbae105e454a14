"""Where a message came from and where it goes: plain values handed between core and adapter."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

STREAM_TRANSPORTS = ("tcp", "tls")
# Via's transport token (RFC 3261 18.2.2) to ours; anything else reliable is treated as TCP.
VIA_TRANSPORTS = {"UDP": "udp", "TCP": "tcp", "TLS": "tls"}


@dataclass(frozen=True, slots=True)
class Target:
    """A next hop: transport ("udp", "tcp" or "tls"), IP literal and port. `name` is the host
    name it was configured or resolved from (a TLS peer's certificate is checked against it);
    it takes no part in equality, so a Target still names one address."""

    transport: str
    host: str
    port: int
    name: str | None = field(default=None, compare=False)

    def uri_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def hostport(self) -> str:
        return f"{self.uri_host()}:{self.port}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from. `connection` identifies a TCP connection for replies on it;
    `dialled` is the Target the proxy itself connected to, if it opened that connection."""

    transport: str
    host: str
    port: int
    connection: int | None = None
    dialled: Target | None = None

    def reply_target(self) -> Target:
        return Target(self.transport, self.host, self.port)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes for the adapter to send; on TCP, `connection` names one (else find or open one)."""

    data: bytes
    target: Target
    connection: int | None = None
    close_after: bool = False


def normalise_host(host: str) -> str:
    host = host.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def unroutable_reason(host: str) -> str | None:
    """Why a response cannot be relayed to `host`, or None. Broadcast and multicast never
    (RFC 4475 bcast); a host name neither, since the proxy does no DNS on its hot path (a
    sender whose Via we stamped carries received= with its IP)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "a host name, not an IP address"
    if address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255":
        return "a broadcast, multicast or unspecified address"
    return None

"""Where a message came from and where it goes: plain values handed between core and adapter."""

from __future__ import annotations

import ipaddress
from typing import Final

from proxy.sip.values import FrozenValue

STREAM_TRANSPORTS: Final = ("tcp", "tls")
# Via's transport token (RFC 3261 18.2.2) to ours; anything else reliable is treated as TCP.
VIA_TRANSPORTS: Final = {"UDP": "udp", "TCP": "tcp", "TLS": "tls"}


class Target(FrozenValue):
    """A next hop: transport ("udp", "tcp" or "tls"), IP literal and port. `name` is the host
    name it was configured or resolved from (a TLS peer's certificate is checked against it);
    it takes no part in equality, so a Target still names one address."""

    __match_args__ = ("transport", "host", "port", "name")
    __slots__ = __match_args__
    transport: str
    host: str
    port: int
    name: str | None

    def __init__(self, transport: str, host: str, port: int, name: str | None = None) -> None:
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "name", name)

    def _values(self) -> tuple[object, ...]:
        return (self.transport, self.host, self.port)  # not `name`

    def uri_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def hostport(self) -> str:
        return f"{self.uri_host()}:{self.port}"


class Source(FrozenValue):
    """Where a message came from. `connection` identifies a TCP connection for replies on it;
    `dialled` is the Target the proxy itself connected to, if it opened that connection."""

    __match_args__ = ("transport", "host", "port", "connection", "dialled")
    __slots__ = __match_args__
    transport: str
    host: str
    port: int
    connection: int | None
    dialled: Target | None

    def __init__(
        self,
        transport: str,
        host: str,
        port: int,
        connection: int | None = None,
        dialled: Target | None = None,
    ) -> None:
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "connection", connection)
        object.__setattr__(self, "dialled", dialled)

    def _values(self) -> tuple[object, ...]:
        return (self.transport, self.host, self.port, self.connection, self.dialled)

    def reply_target(self) -> Target:
        return Target(self.transport, self.host, self.port)


class Outgoing(FrozenValue):
    """Bytes for the adapter to send; on TCP, `connection` names one (else find or open one)."""

    __match_args__ = ("data", "target", "connection", "close_after")
    __slots__ = __match_args__
    data: bytes
    target: Target
    connection: int | None
    close_after: bool

    def __init__(
        self,
        data: bytes,
        target: Target,
        connection: int | None = None,
        close_after: bool = False,
    ) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "connection", connection)
        object.__setattr__(self, "close_after", close_after)


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

"""Our own address as one side sees it, with the bytes Via and Record-Route start with, formatted
once when the config is made instead of for every forwarded request (issue 6)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.sip.addresses import Target


@dataclass(frozen=True, slots=True)
class OurAddress:
    target: Target
    via_prefix: bytes  # `Via: SIP/2.0/UDP host:port;branch=`: the branch and `;rport` follow
    record_route_prefix: bytes  # `<sip:host:port[;transport=tcp];lr`: parameters and `>` follow

    @classmethod
    def of(cls, ours: Target) -> OurAddress:
        hostport = ours.hostport()
        via = f"Via: SIP/2.0/{ours.transport.upper()} {hostport};branch=".encode()
        # RFC 3261 19.1.1: transport=tcp|tls names a stream transport; `sip:` with
        # transport=tls (not `sips:`) since the hop to us is TLS but what lies beyond is not
        # ours to promise.
        transport_param = f";transport={ours.transport}" if ours.transport != "udp" else ""
        record_route = f"<sip:{hostport}{transport_param};lr".encode()
        return cls(ours, via, record_route)

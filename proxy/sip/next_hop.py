"""Where an in-dialog request goes: RFC 3261 16.12 (16.6 steps 6-7), kept to the dialog's peer.

After our own Route entries are taken off, the next hop is the first Route left, else the
Request-URI, the dialog's remote target (the peer's Contact). This proxy only ever sends to the
PBX or a trunk, so a URI is followed only when it names the host of the peer the dialog is with:
then for the port and the transport it asks for (a PBX that reached us over TLS or TCP and
listens there, a trunk whose Contact is another port); any other host gets the peer's
configured address, as before (no open relay: what a peer writes in its Contact or Route
never sends us elsewhere). Before, every in-dialog request toward the PBX went to `--pbx`, over
its transport: a TLS dialog's BYE went out in clear UDP, a TCP-only PBX never got it.
"""

from __future__ import annotations

from typing import Final

from proxy.sip.addresses import VIA_TRANSPORTS, Target, normalise_host
from proxy.sip.errors import SipError
from proxy.sip.grammar import SipUri, parse_sip_uri

_DEFAULT_PORTS: Final = {"udp": 5060, "tcp": 5060, "tls": 5061}


def dialog_next_hop(
    configured: Target, next_route: str | None, request_uri: SipUri | None
) -> Target:
    """The target for an in-dialog request to the peer `configured`: `next_route` (the URI of
    the first Route entry left, if any) or else `request_uri` (None for a tel: URI)."""
    uri = request_uri
    if next_route is not None:
        try:
            uri = parse_sip_uri(next_route)
        except SipError:
            return configured
    if uri is None or not _same_host(uri.host, configured.host):
        return configured
    transport = _transport_of(uri) or configured.transport
    if uri.port is not None:
        port = uri.port
    elif transport == configured.transport:
        port = configured.port
    else:
        port = _DEFAULT_PORTS[transport]
    if transport == configured.transport and port == configured.port:
        return configured
    return Target(transport, configured.host, port, configured.name)


def _same_host(uri_host: str, host: str) -> bool:
    return uri_host == host or normalise_host(uri_host) == normalise_host(host)


def _transport_of(uri: SipUri) -> str | None:
    """What the URI asks for: `transport=` (RFC 3261 19.1.1), TLS for sips:; None when it says
    nothing (or names a transport we do not speak: then the peer's configured one)."""
    if uri.scheme == "sips":
        return "tls"
    value = uri.params.get("transport")
    return VIA_TRANSPORTS.get(value.upper()) if value else None

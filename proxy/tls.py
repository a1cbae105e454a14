"""SIP over TLS (RFC 3261 26.2.1, RFC 5630): the TCP adapter with an `ssl` context.

Framing, idle timeouts and the core's view are exactly those of TCP; only the transport name
("tls": Via `SIP/2.0/TLS`, Record-Route `;transport=tls`) and the handshake differ. `sips:` URIs
are relayed as the peers wrote them: TLS here secures the hop, it promises nothing beyond.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.sip.addresses import Target
from proxy.transport import TcpConnection


class TlsConnection(TcpConnection):
    """A TLS connection, accepted on a `tls:` listen address or dialled to a `tls:` peer."""

    transport_name = "tls"


class TlsSettingsError(ValueError):
    pass


@dataclass(frozen=True)
class TlsSettings:
    """`cert`/`key`: what the proxy presents (required to listen on TLS, presented to peers
    that ask for a client certificate too); `ca`: what it trusts (None: the system store);
    `verify`: check the peer's certificate and its name (RFC 5922 section 7.2)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    verify: bool = True

    def server_context(self) -> ssl.SSLContext:
        if self.cert is None:
            raise TlsSettingsError("listening on tls: needs --tls-cert (and --tls-key)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_own_certificate(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """For the trunk and the PBX we dial: verified against the name they were given as."""
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.ca) if self.ca else None
            )
        except (OSError, ssl.SSLError) as error:
            raise TlsSettingsError(f"cannot load --tls-ca {self.ca}: {error}") from error
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert is not None:
            self._load_own_certificate(context)
        return context

    def _load_own_certificate(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        except (OSError, ssl.SSLError) as error:
            raise TlsSettingsError(
                f"cannot load --tls-cert {self.cert} / --tls-key {self.key}: {error}"
            ) from error


class TlsContexts:
    """Both contexts, built once at start (a bad file is refused there, not on the first call)."""

    def __init__(self, settings: TlsSettings, *, listening: bool) -> None:
        self.client = settings.client_context()
        self.server = settings.server_context() if listening else None

    def dial_options(self, target: Target) -> dict[str, Any]:
        """Keyword arguments of `loop.create_connection` for `target`: none for TCP."""
        if target.transport != "tls":
            return {}
        return {"ssl": self.client, "server_hostname": target.name or target.host}

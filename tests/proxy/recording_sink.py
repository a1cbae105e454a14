"""A transport sink that records the messages handed to it and ignores everything else: for
tests that drive a real UdpEndpoint or TcpConnection without a ProxyServer behind it."""

from __future__ import annotations

from proxy.sip.addresses import Source, Target
from proxy.sip.framing import Frame
from proxy.transport import TcpConnection


class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def on_message(self, data: bytes, source: Source) -> None:
        self.messages.append(data)

    def on_broken_stream(self, frame: Frame, source: Source) -> None: ...

    def on_connection_made(self, connection: TcpConnection) -> None: ...

    def on_connection_closed(self, connection: TcpConnection) -> None: ...

    def on_unreachable(self, target: Target) -> None: ...

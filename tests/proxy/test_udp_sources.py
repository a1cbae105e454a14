"""The UDP endpoint makes a peer's Source once and hands the same one on (a PBX and a few
trunks send nearly every datagram), and what it keeps is bounded against a spray of senders."""

from __future__ import annotations

from proxy.sip.addresses import Source
from proxy.transport import SOURCES_KEPT, UdpEndpoint


class SourceSink:
    def __init__(self) -> None:
        self.sources: list[Source] = []

    def on_message(self, data: bytes, source: Source) -> None:
        self.sources.append(source)


def endpoint() -> tuple[UdpEndpoint, SourceSink]:
    sink = SourceSink()
    return UdpEndpoint(sink), sink  # type: ignore[arg-type]  # only on_message is called


def test_a_peer_gets_its_source_once_and_the_same_one_after() -> None:
    udp, sink = endpoint()
    udp.datagram_received(b"OPTIONS a", ("127.0.0.1", 5070))
    udp.datagram_received(b"OPTIONS b", ("127.0.0.1", 5070))
    udp.datagram_received(b"OPTIONS c", ("::1", 5070, 0, 0))  # IPv6: a 4-tuple
    udp.datagram_received(b"OPTIONS d", ("::1", 5070, 0, 0))
    first, second, v6, v6_again = sink.sources
    assert first == Source("udp", "127.0.0.1", 5070)
    assert second is first
    assert v6 == Source("udp", "::1", 5070)
    assert v6_again is v6


def test_the_sources_kept_are_bounded_and_still_right_past_the_bound() -> None:
    udp, sink = endpoint()
    for n in range(3 * SOURCES_KEPT):
        udp.datagram_received(b"OPTIONS x", ("10.0.0.1", 1024 + n))
        assert len(udp._sources) <= SOURCES_KEPT
    assert [source.port for source in sink.sources] == [1024 + n for n in range(3 * SOURCES_KEPT)]
    assert all(source.host == "10.0.0.1" and source.transport == "udp" for source in sink.sources)

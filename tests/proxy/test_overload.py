"""The overload detector (proxy/overload.py) on a fake clock, and the UDP queue probe on a real
socket: one pause, or the backlog it leaves being worked off, does not shed; a queue that keeps
growing, a loop late again and again, or a CPU at its limit for long does; and admission resumes
at the first sample after the load is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.overload import OverloadDetector, OverloadLimits, Sample
from proxy.sip.addresses import Source, Target
from proxy.sip.framing import Frame
from proxy.transport import TcpConnection, UdpEndpoint

STEP = 0.05  # the server's check interval
LIMITS = OverloadLimits(max_delay=0.1, max_busy=0.95, sustain=0.2, busy_window=1.0)


def run(samples: Iterable[Mapping[str, Any]], limits: OverloadLimits = LIMITS) -> list[bool]:
    """The overload state after each sample; `now`, `elapsed` follow STEP unless given."""
    detector = OverloadDetector(limits)
    states, now = [], 0.0
    for fields in samples:
        elapsed = float(fields.get("elapsed", STEP))
        now += elapsed
        values: dict[str, Any] = {"now": now, "lag": 0.0, "busy": 0.5 * STEP,
                                     "elapsed": elapsed, **fields}  # fmt: skip
        detector.sample(Sample(**values))
        states.append(detector.overloaded)
    return states


def quiet(n: int) -> list[Mapping[str, Any]]:
    return [{"sojourns": (0.002,)} for _ in range(n)]


def test_one_long_pause_does_not_shed() -> None:
    # a 0.5 s stall: one late check, then the backlog it left drains (the probes sent after it
    # come back sooner and sooner) while the CPU is busy working it off
    pause = [{"lag": 0.5, "busy": 0.5, "elapsed": 0.55}]
    drain = [
        {"sojourns": (0.4 - 0.04 * i,), "outstanding": 0.35 - 0.04 * i, "busy": STEP}
        for i in range(9)
    ]
    assert not any(run([*quiet(5), *pause, *drain, *quiet(10)]))


def test_a_growing_udp_queue_sheds_and_admission_resumes_once_it_is_gone() -> None:
    growing = [{"sojourns": (0.05 + 0.05 * i,), "busy": STEP} for i in range(8)]
    states = run([*quiet(5), *growing, *quiet(2)])
    assert not any(states[:5]) and states[12]  # shed while the queue grows
    assert states.index(True) <= 5 + 6  # within 0.3 s of the delay passing its bound
    assert not states[-1]  # the first quiet probe back: admitting again


def test_a_probe_stuck_in_the_queue_sheds_without_waiting_for_it() -> None:
    states = run([*quiet(3), {"outstanding": 0.3}, {"outstanding": 0.6}])
    assert states == [False, False, False, False, True]


def test_a_loop_late_again_and_again_sheds() -> None:
    stalls = [{"lag": 0.3, "elapsed": 0.35} for _ in range(3)]
    assert run([*quiet(2), *stalls]) == [False, False, False, True, True]  # the 2nd in a row


def test_a_tcp_backlog_that_keeps_up_or_shrinks_does_not_shed_one_that_grows_does() -> None:
    shrinking = [{"backlog": 0.4 - 0.03 * i} for i in range(10)]
    assert not any(run([*quiet(2), *shrinking]))
    growing = [{"backlog": 0.12 + 0.03 * i} for i in range(6)]
    assert run([*quiet(2), *growing])[-1]


def test_cpu_at_its_limit_sheds_only_when_it_lasts() -> None:
    burst = [{"busy": STEP} for _ in range(6)]  # 0.3 s at 100%: a burst
    assert not any(run([*quiet(20), *burst, *quiet(20)]))
    saturated = [{"busy": STEP} for _ in range(80)]  # 4 s at 100%
    states = run([*saturated, {"busy": 0.0}, *[{"busy": 0.0}] * 10])
    assert states[79] and not states[-1]


def test_a_cpu_bound_just_under_the_limit_keeps_admitting() -> None:
    assert not any(run([{"busy": 0.93 * STEP} for _ in range(200)]))


# ------------------------------------------------------------------ the probe, on a socket
class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def on_message(self, data: bytes, source: Source) -> None:
        self.messages.append(data)

    def on_broken_stream(self, frame: Frame, source: Source) -> None: ...

    def on_connection_made(self, connection: TcpConnection) -> None: ...

    def on_connection_closed(self, connection: TcpConnection) -> None: ...

    def on_unreachable(self, target: Target) -> None: ...


async def _probe_round_trip() -> tuple[list[float], list[bytes], float]:
    loop = asyncio.get_running_loop()
    sink = Sink()
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(sink), local_addr=("127.0.0.1", 0)
    )
    try:
        endpoint.probe(loop.time())
        token = endpoint._token
        forged = token[:-1] + bytes([token[-1] ^ 1]) + bytes(8)  # another token: a peer's
        transport.sendto(forged, transport.get_extra_info("sockname"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if endpoint.sojourns and sink.messages:
                break
        return endpoint.take_sojourns(), sink.messages, endpoint.oldest_probe_age(loop.time())
    finally:
        transport.close()


def test_a_probe_comes_back_through_the_socket_and_is_never_a_message() -> None:
    sojourns, messages, outstanding = asyncio.run(_probe_round_trip())
    assert len(sojourns) == 1 and 0.0 <= sojourns[0] < 1.0
    assert outstanding == 0.0
    assert len(messages) == 1 and messages[0].endswith(bytes(8))  # the forged one, as data

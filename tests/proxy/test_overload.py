"""The overload detector (proxy/overload.py) on a fake clock, and the UDP queue probe on a real
socket: one pause, or the backlog it leaves being worked off, does not shed; a queue that keeps
growing, a loop late again and again, or a CPU at its limit for long does; and admission resumes
as soon as the load is gone. Above capacity the share shed follows the excess (a closed loop
with a simulated queue)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.bench_calls import PBX, invite
from bench.bench_glue import make_server
from proxy.overload import OverloadDetector, OverloadLimits, Sample
from proxy.server import ProxyServer
from proxy.transport import UdpEndpoint
from tests.proxy.recording_sink import Sink

STEP = 0.05  # the server's check interval
LIMITS = OverloadLimits(max_delay=0.1, max_busy=0.95, sustain=0.2, busy_window=1.0)


def run(samples: Iterable[Mapping[str, Any]], limits: OverloadLimits = LIMITS) -> list[bool]:
    """Whether new INVITEs are being shed (any share) after each sample; `now` follows the
    samples' `elapsed` (STEP unless given)."""
    detector = OverloadDetector(limits)
    states, now = [], 0.0
    for fields in samples:
        elapsed = float(fields.get("elapsed", STEP))
        now += elapsed
        values: dict[str, Any] = {"now": now, "lag": 0.0, "busy": 0.5 * STEP,
                                     "elapsed": elapsed, **fields}  # fmt: skip
        detector.sample(Sample(**values))
        states.append(detector.fraction > 0.0)
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
    states = run([*quiet(5), *growing, *quiet(12)])
    assert not any(states[:5]) and states[12]  # shed while the queue grows
    assert states.index(True) <= 5 + 6  # within 0.3 s of the delay passing its bound
    assert not states[-1]  # the queue gone: admitting everything again within 0.6 s


def steered(offered: float, samples: int) -> tuple[list[float], list[float]]:
    """A process offered `offered` times what it can handle: each sample its queue grows by the
    work admitted beyond its capacity (a shed INVITE costs nothing here); the probe's sojourn
    is the queue. The fraction shed and the delay, per sample."""
    detector = OverloadDetector(LIMITS)
    queue, now, fractions, delays = 0.0, 0.0, [], []
    for _ in range(samples):
        now += STEP
        admitted = offered * (1.0 - detector.fraction)
        queue = max(0.0, queue + (admitted - 1.0) * STEP)
        detector.sample(Sample(now, 0.0, STEP * min(1.0, admitted), STEP, (queue,)))
        fractions.append(detector.fraction)
        delays.append(queue)
    return fractions, delays


def test_above_capacity_the_share_shed_settles_at_the_excess_and_the_queue_stays_short() -> None:
    for offered in (2.0, 6.0):
        fractions, delays = steered(offered, 400)
        settled = fractions[200:]
        excess = 1.0 - 1.0 / offered  # the share that must be shed
        assert abs(sum(settled) / len(settled) - excess) < 0.1, offered
        assert max(delays[200:]) < LIMITS.max_delay  # a 503 (and an admitted call) waits little
        assert min(settled) > 0.0 or offered > 5  # a share, not all or nothing


def fractions_after(samples: Iterable[Mapping[str, Any]]) -> list[float]:
    detector = OverloadDetector(LIMITS)
    out, now = [], 0.0
    for fields in samples:
        now += STEP
        values: dict[str, Any] = {"now": now, "lag": 0.0, "busy": STEP, "elapsed": STEP,
                                     **fields}  # fmt: skip
        detector.sample(Sample(**values))
        out.append(detector.fraction)
    return out


def test_a_queue_that_empties_while_the_loop_stays_busy_lowers_the_share_step_by_step() -> None:
    """The calls just admitted still bring their responses, ACKs and BYEs: a queue gone empty
    at a busy loop lowers the share by GAIN per sample, not at once (which swung the share
    from all to half, and the queue from empty to 300 ms, every second at 6x capacity)."""
    growing = [{"sojourns": (0.15 + 0.05 * i,)} for i in range(8)]
    fractions = fractions_after([*growing, *[{"sojourns": (0.0,)}] * 3])
    assert fractions[7] == 1.0  # all shed while the queue grows
    drops = [before - after for before, after in itertools.pairwise(fractions[7:])]
    assert all(0.0 < drop <= 0.1 for drop in drops), drops  # GAIN x 40 ms = 0.08 a sample


def test_an_idle_loop_admits_again_at_once() -> None:
    growing = [{"sojourns": (0.15 + 0.05 * i,)} for i in range(8)]
    idle = [{"sojourns": (0.0,), "busy": 0.2 * STEP}] * 4
    fractions = fractions_after([*growing, *idle])
    assert fractions[7] == 1.0 and fractions[-1] == 0.0  # the load is gone: 4 samples, 0.2 s


def test_at_capacity_nothing_is_shed() -> None:
    fractions, delays = steered(0.9, 400)
    assert not any(fractions) and max(delays) == 0.0


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
    states = run(saturated)
    assert 55 <= states.index(True) < 70  # ~3 s at 100%: the share smoothed over 1 s passes 0.95
    assert not states[-1]  # no queue behind it: it keeps up, the steering admits all again
    growing = [{"busy": STEP, "sojourns": (0.02 + 0.01 * i,)} for i in range(80)]
    assert all(run(growing)[-20:])  # a queue growing behind it: the share stays


def test_a_single_stall_seen_by_a_probe_still_in_flight_does_not_shed() -> None:
    # the loop stalled 0.6 s: the check runs first, late by 0.6 s, and sees the probe sent just
    # before the stall still outstanding (0.65 s); the probe then comes back at once
    stall = [{"lag": 0.6, "elapsed": 0.65, "outstanding": 0.65, "busy": 0.05}]
    after = [{"sojourns": (0.6,), "busy": STEP}, *quiet(10)]
    assert not any(run([*quiet(5), *stall, *after]))


def test_a_cpu_bound_just_under_the_limit_keeps_admitting() -> None:
    assert not any(run([{"busy": 0.93 * STEP} for _ in range(200)]))


# ------------------------------------------------------------------ the probe, on a socket
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


async def _checks_on_a_socket(
    checks: list[tuple[bool, int]], lost_probe: bool = False
) -> list[list[float]]:
    """Overload checks in a row on a real socket, each (idle, queued bytes) as the server would
    pass them; the sojourns each left once its probe, if any, came back. `lost_probe`: one
    probe is out and will never come back (lost in a flood) before the first check."""
    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(Sink()), local_addr=("127.0.0.1", 0)
    )
    if lost_probe:
        endpoint._outstanding.append(loop.time() - 1.0)
    seen: list[list[float]] = []
    try:
        for idle, queued in checks:
            endpoint.probe_unless_idle(loop.time(), queued, idle=idle)
            for _ in range(100):  # a probe sent comes back; an idle check sends none
                if endpoint.sojourns and endpoint.oldest_probe_age(loop.time()) == 0.0:
                    break
                await asyncio.sleep(0.01)
            seen.append(endpoint.take_sojourns())
        assert endpoint.oldest_probe_age(loop.time()) == 0.0  # nothing left out
        return seen
    finally:
        transport.close()


def _probed(sojourns: list[float]) -> bool:
    """A real probe's sojourn: measured, never exactly the 0 of a check that sent none."""
    return len(sojourns) == 1 and 0.0 < sojourns[0] < 1.0


def test_an_idle_proxy_sends_no_probe_and_reads_an_empty_queue() -> None:
    idle, busy, idle_again = asyncio.run(_checks_on_a_socket([(True, 0), (False, 0), (True, 0)]))
    assert idle == [0.0] and idle_again == [0.0]
    assert _probed(busy)


def test_an_unread_kernel_queue_is_probed_even_when_nothing_arrived() -> None:
    (queued,) = asyncio.run(_checks_on_a_socket([(True, 4096)]))
    assert _probed(queued)


def test_a_probe_lost_in_a_flood_is_cleared_by_the_next_one_even_when_idle() -> None:
    # the lost probe's age would read as a queue stuck for a second, check after check, until
    # a later probe comes back and retires it: an idle check still sends that probe
    (first,) = asyncio.run(_checks_on_a_socket([(True, 0)], lost_probe=True))
    assert _probed(first)


class IdleRecorder(UdpEndpoint):
    """Records what each overload check told it (`idle`), sends nothing."""

    def __init__(self, sink: ProxyServer) -> None:
        super().__init__(sink)
        self.told: list[bool] = []

    def probe_unless_idle(self, now: float, queued_bytes: int, *, idle: bool) -> None:
        self.told.append(idle)


async def _idle_as_the_server_sees_it(directory: Path) -> list[bool]:
    server, _ = make_server(directory)
    endpoint = IdleRecorder(server)
    server._udp = [("127.0.0.1", endpoint)]
    try:
        server._check_lag()  # nothing arrived yet
        server.on_message(invite(1), PBX)  # as a `--workers` inbox hands it: not via the socket
        server._check_lag()
        server._check_lag()  # nothing since
        server.on_shed_by_dispatcher(invite(2), PBX)
        server._check_lag()
        return endpoint.told
    finally:
        for handle in (server._lag_handle, server._timer):
            if handle is not None:
                handle.cancel()


def test_a_message_by_any_path_makes_the_next_check_probe(tmp_path: Path) -> None:
    assert asyncio.run(_idle_as_the_server_sees_it(tmp_path)) == [True, False, True, False]


# ------------------------------------------------------------------ a share, in the server
async def _half_shed(directory: Path) -> tuple[int, int]:
    server, transport = make_server(directory)
    server._partial = 0.5  # what `_overload_changed` sets for a detector's fraction of 0.5
    for n in range(20):
        server.on_message(invite(n), PBX)
    if server._timer is not None:
        server._timer.cancel()
    shed = server.core.counters["shed"]
    forwarded = sum(1 for data in transport.sent if data.startswith(b"INVITE "))
    return shed, forwarded


def test_a_share_of_half_sheds_every_other_new_invite(tmp_path: Path) -> None:
    shed, forwarded = asyncio.run(_half_shed(tmp_path))
    assert (shed, forwarded) == (10, 10)


def test_the_detectors_figures_stay_unboxed() -> None:
    """Issue 7: a float re-made at every sample and kept until the next one is served from a
    flood's pymalloc pool and pins its arena; the detector keeps its figures in arrays."""
    detector = OverloadDetector(LIMITS)
    now = 0.0
    for n in range(100):  # into overload and out of it
        now += STEP
        lag = 0.3 if n < 20 else 0.0
        detector.sample(Sample(now, lag, 0.5 * STEP, STEP, (lag + 0.001,), 0.0, 0.0))
        kept = [*vars(detector).values(), *vars(detector._queue).values()]
        assert not any(isinstance(value, float) for value in kept), vars(detector)
    assert not detector.overloaded and detector.delay == 0.001 and detector.fraction == 0.0


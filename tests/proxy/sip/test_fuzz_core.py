"""The whole sans-IO core under fuzz (issue 7): mutated RFC 4475 messages, mutated answers to
requests it really forwarded, random bytes; from the PBX, the trunk and an outsider; as
datagrams and as streams cut anywhere. No exception escapes and whatever it sends is SIP.
CI-sized here; `python3 bench/fuzz_core.py --count 1000000` is the long run."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.sip.addresses import Outgoing
from proxy.sip.framing import StreamFramer
from tests.proxy.sip.fuzz_support import (
    SOURCES,
    STREAM_SOURCES,
    FuzzRun,
    fuzz_one,
    output_problem,
)
from tests.proxy.sip.support import make_core

FUZZ = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(rng=st.randoms(use_true_random=False), now=st.floats(0, 1e6))
def test_generated_inputs_never_raise_and_outputs_are_sip(rng: random.Random, now: float) -> None:
    core = make_core()
    assert fuzz_one(core, rng, now) == []
    assert fuzz_one(core, rng, now + 1.0) == []  # the same core, once more


@FUZZ
@given(
    data=st.binary(max_size=2000),
    side=st.sampled_from(sorted(SOURCES)),
    stream=st.booleans(),
    cut=st.integers(0, 2000),
)
def test_random_bytes_never_raise(data: bytes, side: str, stream: bool, cut: int) -> None:
    core = make_core()
    source = (STREAM_SOURCES if stream else SOURCES)[side]
    out: list[Outgoing] = []
    if stream:
        framer = StreamFramer()
        for piece in (data[:cut], data[cut:]):
            for frame in framer.feed(piece):
                if frame.fatal:
                    core.receive_broken_stream(frame.data, frame.reason, source)
                else:
                    core.receive(frame.data, source, 0.0)
                out += core.datagrams_to_send()
    else:
        core.receive(data, source, 0.0)
        out = core.datagrams_to_send()
    assert [output_problem(o, source) for o in out if output_problem(o, source)] == []


def test_a_long_lived_core_survives_a_seeded_run() -> None:
    """State builds up (transactions, dialogs, timers) across inputs, as in a real process."""
    run = FuzzRun(seed=4475)
    for index in range(2000):
        run.one(index)
    assert run.exceptions == []
    assert run.bad_outputs == []

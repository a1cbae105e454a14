"""A short load run through the proxy: every call succeeds on both sides."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.calls import Outbound, place_outbound
from tests.e2e.conftest import StartProxy

CALLS = 200
RATE = 50  # calls per second


def test_200_calls_at_50_per_second_all_succeed(start_proxy: StartProxy, tmp_path: Path) -> None:
    call = Outbound("1002", "00442079460000", "+442071234567")
    place_outbound(call, start_proxy(), tmp_path, calls=CALLS, rate=RATE)

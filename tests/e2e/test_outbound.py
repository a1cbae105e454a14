"""Outbound calls PBX -> proxy -> trunk: the trunk sees the chosen number, the PBX its own identity.

Every check lives in the SIPp scenarios (see sipp_scenarios/); a failed check fails that side's
call, which shows in its exit code and stat CSV.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.calls import BUSY, CANCELLED, TRUNK_HANGS_UP, Outbound, place_outbound
from tests.e2e.conftest import StartProxy

TRANSPORTS = ["udp", "tcp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_call_shows_the_users_own_number_and_the_pbx_keeps_its_identity(
    start_proxy: StartProxy, tmp_path: Path, transport: str
) -> None:
    proxy = start_proxy(transport)
    place_outbound(Outbound("1001", "00442079460000", "+3228880001"), proxy, tmp_path)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(Outbound("1002", "00442079460000", "+442071234567"), id="uk-prefix-rule"),
        pytest.param(Outbound("1002", "003312345678", "+33144556677"), id="fr-prefix-rule"),
        pytest.param(Outbound("1002", "025551234", "+3228880000"), id="default-number"),
    ],
)
def test_call_of_a_user_without_own_number_follows_the_prefix_rules(
    start_proxy: StartProxy, tmp_path: Path, call: Outbound
) -> None:
    place_outbound(call, start_proxy(), tmp_path)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bye_from_the_trunk_reaches_the_pbx_with_its_original_identity(
    start_proxy: StartProxy, tmp_path: Path, transport: str
) -> None:
    proxy = start_proxy(transport)
    call = Outbound("1001", "00442079460000", "+3228880001")
    place_outbound(call, proxy, tmp_path, flow=TRUNK_HANGS_UP)


def test_cancel_before_answer_is_relayed_hop_by_hop(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    call = Outbound("1001", "00442079460000", "+3228880001")
    place_outbound(call, start_proxy(), tmp_path, flow=CANCELLED)


def test_busy_trunk_486_reaches_the_pbx_and_the_proxy_acks_the_trunk(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    call = Outbound("1002", "003312345678", "+33144556677")
    place_outbound(call, start_proxy(), tmp_path, flow=BUSY)

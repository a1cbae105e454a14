"""The SIPp scenarios checked against each other, without the proxy.

Each PBX-side scenario talks straight to its trunk-side partner with expectations matching what the
PBX sends, so every flow is proven to complete; then one thing is changed at a time and the side
that should notice must fail its call. This is what makes the proxy tests' verdicts trustworthy:
a check that cannot fail would pass a proxy that rewrites nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.calls import BUSY, CANCELLED, PBX_HANGS_UP, TRUNK_HANGS_UP
from tests.e2e.ports import free_port
from tests.e2e.sipp import (
    SCENARIO_DIR,
    SippSide,
    assert_all_succeeded,
    assert_side_failed,
    run_pair,
)

PBX_USER = "+3228880001"  # what the PBX puts in From, so a direct call looks already rewritten
HOST = "127.0.0.1"
PPI_LINE = '      P-Preferred-Identity: "Extension [$pbx_user]" <sip:[$pbx_user]@[local_ip]>\n'


def edited_scenarios(workdir: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of sipp_scenarios/ with the PBX's P-Preferred-Identity removed (the proxy's job)
    and, per file, one (old, new) replacement of its first occurrence. Each edit must apply."""
    target = workdir / "scenarios"
    shutil.copytree(SCENARIO_DIR, target)
    for path in target.glob("pbx_uac_*.xml"):
        text = path.read_text()
        assert PPI_LINE in text, f"{path.name} no longer sends P-Preferred-Identity"
        path.write_text(text.replace(PPI_LINE, ""))
    for name, (old, new) in edits.items():
        path = target / name
        text = path.read_text()
        assert old in text, f"{old!r} not in {name}"
        path.write_text(text.replace(old, new, 1))
    return target


def direct_pair(
    flow: tuple[str, str],
    scenario_dir: Path,
    trunk_overrides: dict[str, str] | None = None,
) -> tuple[SippSide, SippSide]:
    trunk_scenario, pbx_scenario = flow
    trunk_port = free_port()
    expected = {
        "expected_number": PBX_USER,
        "expected_display": f"Extension {PBX_USER}",
        "expected_host": HOST,
    }
    expected.update(trunk_overrides or {})
    trunk = SippSide(
        "trunk", trunk_scenario, trunk_port, expected, scenario_dir=scenario_dir, timeout_s=40
    )
    pbx = SippSide(
        "pbx",
        pbx_scenario,
        free_port(),
        {"pbx_user": PBX_USER, "destination": "00442079460000"},
        remote=f"{HOST}:{trunk_port}",
        scenario_dir=scenario_dir,
    )
    return trunk, pbx


@pytest.mark.parametrize(
    "flow", [PBX_HANGS_UP, TRUNK_HANGS_UP, CANCELLED, BUSY], ids=lambda flow: flow[1]
)
def test_outbound_flows_complete_when_identity_is_as_expected(
    tmp_path: Path, flow: tuple[str, str]
) -> None:
    trunk, pbx = direct_pair(flow, edited_scenarios(tmp_path, {}))
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), calls=1)


@pytest.mark.parametrize(
    ("overrides", "keep_ppi", "reason"),
    [
        pytest.param({"expected_number": "+3228880000"}, False, "strcmp from_user", id="number"),
        pytest.param({"expected_display": "ACME UK"}, False, "strcmp from_display", id="name"),
        pytest.param({"expected_host": "127.0.0.9"}, False, "strcmp from_host", id="host"),
        pytest.param({}, True, "regexp 'P-Preferred-Identity", id="p-preferred-identity-left"),
    ],
)
def test_trunk_side_fails_the_call_on_a_wrong_identity(
    tmp_path: Path, overrides: dict[str, str], keep_ppi: bool, reason: str
) -> None:
    scenarios = SCENARIO_DIR if keep_ppi else edited_scenarios(tmp_path, {})
    trunk, pbx = direct_pair(PBX_HANGS_UP, scenarios, overrides)
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, reason)


def test_trunk_side_fails_when_the_bye_lost_the_rewritten_number(tmp_path: Path) -> None:
    bye = "From: [$my_from]\n      [last_To:]\n      Call-ID: [call_id]\n      CSeq: 2 BYE"
    original = "<sip:1001@[local_ip]>;tag=[pid]SIPpTag00[call_number]"
    scenarios = edited_scenarios(
        tmp_path, {"pbx_uac_call.xml": (bye, bye.replace("[$my_from]", original))}
    )
    trunk, pbx = direct_pair(PBX_HANGS_UP, scenarios)
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, 'strcmp from_user:"1001"')


def test_pbx_side_fails_when_the_200_does_not_carry_its_from(tmp_path: Path) -> None:
    foreign = "From: <sip:+3228880001@127.0.0.1>;tag=[pid]SIPpTag00[call_number]"
    answer = "SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]"
    scenarios = edited_scenarios(
        tmp_path, {"trunk_uas_call.xml": (answer, answer.replace("[last_From:]", foreign))}
    )
    trunk, pbx = direct_pair(PBX_HANGS_UP, scenarios)
    _, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(pbx_result, "strcmp seen_from")


def test_pbx_side_fails_when_the_trunks_bye_does_not_carry_its_identity(tmp_path: Path) -> None:
    other_to = "To: <sip:1009@127.0.0.1>\n      X-Was: [$invite_from]"
    scenarios = edited_scenarios(
        tmp_path, {"trunk_uas_hangup.xml": ("To: [$invite_from]", other_to)}
    )
    trunk, pbx = direct_pair(TRUNK_HANGS_UP, scenarios)
    _, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(pbx_result, "strcmp seen_to")


def inbound_direct(tmp_path: Path, expected_to: str) -> tuple[SippSide, SippSide]:
    pbx_port = free_port()
    pbx = SippSide(
        "pbx",
        "pbx_uas_inbound.xml",
        pbx_port,
        {
            "expected_from": f'"Remote +32470123456" <sip:+32470123456@{HOST}>',
            "expected_to": expected_to,
        },
        timeout_s=40,
    )
    trunk = SippSide(
        "trunk",
        "trunk_uac_inbound.xml",
        free_port(),
        {"caller": "+32470123456", "callee": "+3228880000"},
        remote=f"{HOST}:{pbx_port}",
    )
    return pbx, trunk


def test_inbound_flow_completes_when_identities_are_untouched(tmp_path: Path) -> None:
    pbx, trunk = inbound_direct(tmp_path, f"<sip:+3228880000@{HOST}>")
    assert_all_succeeded(run_pair(pbx, trunk, tmp_path), calls=1)


def test_pbx_side_fails_an_inbound_call_whose_to_changed(tmp_path: Path) -> None:
    pbx, trunk = inbound_direct(tmp_path, f"<sip:+3228880001@{HOST}>")
    pbx_result, _ = run_pair(pbx, trunk, tmp_path)
    assert_side_failed(pbx_result, "strcmp seen_to")


REJECTED = ("trunk_uas_reject.xml", "pbx_uac_unavailable.xml")


@pytest.mark.parametrize("status", ["408", "500", "502", "503", "504"])
def test_reject_scenario_answers_each_failover_status(tmp_path: Path, status: str) -> None:
    """trunk_uas_reject.xml answers the -set status (SIPp needs a send per code); only a 503
    completes pbx_uac_unavailable.xml's call, any other one fails it."""
    trunk, pbx = direct_pair(REJECTED, edited_scenarios(tmp_path, {}), {"status": status})
    trunk_result, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert f"SIP/2.0 {status} " in trunk_result.messages, trunk_result.report()
    if status == "503":
        assert_all_succeeded([trunk_result, pbx_result], calls=1)
    else:
        assert_side_failed(pbx_result, "unexpected message")


def test_reject_scenario_fails_on_a_status_it_has_no_answer_for(tmp_path: Path) -> None:
    trunk, pbx = direct_pair(REJECTED, edited_scenarios(tmp_path, {}), {"status": "486"})
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, "regexp '^(408|500|502|503|504)$'")

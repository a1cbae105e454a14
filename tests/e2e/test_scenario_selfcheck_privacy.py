"""Self-checks of the withheld / not-withheld scenarios (issue 9), without the proxy.

As in test_scenario_selfcheck.py: the PBX side talks straight to the trunk side, first sending
exactly what the proxy must produce, so the flow is proven to complete; then one thing changes
and the trunk side must fail its call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.calls import PBX_HANGS_UP
from tests.e2e.sipp import assert_all_succeeded, assert_side_failed, run_pair
from tests.e2e.test_scenario_selfcheck import direct_pair, edited_scenarios

WITHHELD = ("trunk_uas_withheld.xml", "pbx_uac_call.xml")
NOT_WITHHELD = ("trunk_uas_not_withheld.xml", "pbx_uac_call.xml")
PRIVACY_ASKED = ("trunk_uas_not_withheld.xml", "pbx_uac_privacy.xml")

PBX_FROM = "&quot;Extension [$pbx_user]&quot; &lt;sip:[$pbx_user]@[local_ip]&gt;"
ANONYMOUS = "&quot;Anonymous&quot; &lt;sip:anonymous@anonymous.invalid&gt;"
SUBJECT = "      Subject: callerid-proxy e2e\n"
PRIVACY_ID = "      Privacy: id\n"
PAI = "      P-Asserted-Identity: <sip:[$pbx_user]@[local_ip]>\n"
RPID = "      Remote-Party-ID: <sip:[$pbx_user]@[local_ip]>;party=calling\n"


def as_the_proxy_withholds(workdir: Path, *changes: tuple[str, str]) -> Path:
    """Scenarios where pbx_uac_call.xml sends what the proxy sends for a withheld call:
    anonymous From, Privacy: id, the number in P-Asserted-Identity; then `changes`."""
    scenarios = edited_scenarios(workdir, {})
    path = scenarios / "pbx_uac_call.xml"
    text = path.read_text()
    for old, new in ((PBX_FROM, ANONYMOUS), (SUBJECT, PRIVACY_ID + SUBJECT), *changes):
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)
    return scenarios


def test_withheld_flow_completes_when_the_invite_is_as_the_proxy_sends_it(
    tmp_path: Path,
) -> None:
    trunk, pbx = direct_pair(WITHHELD, as_the_proxy_withholds(tmp_path))
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), calls=1)


@pytest.mark.parametrize(
    ("changes", "overrides", "reason"),
    [
        pytest.param([(ANONYMOUS, PBX_FROM)], {}, '"Anonymous"', id="from-shows-the-number"),
        pytest.param([(PRIVACY_ID, "")], {}, "header Privacy: not found", id="no-privacy"),
        pytest.param(
            [(PRIVACY_ID, "      Privacy: none\n")], {}, "^[[:blank:]]*id", id="privacy-none"
        ),
        pytest.param(
            [(PRIVACY_ID, PRIVACY_ID * 2)], {}, "Privacy[[:blank:]]*:.*Privacy", id="two-privacy"
        ),
        pytest.param([(PAI, PAI + RPID)], {}, "Remote-Party-ID", id="remote-party-id-left"),
        pytest.param([], {"expected_number": "+3228880000"}, "strcmp pai_user", id="pai-number"),
        pytest.param([], {"expected_host": "127.0.0.9"}, "strcmp pai_host", id="pai-host"),
    ],
)
def test_withheld_trunk_side_fails_the_call_on_a_wrong_invite(
    tmp_path: Path, changes: list[tuple[str, str]], overrides: dict[str, str], reason: str
) -> None:
    trunk, pbx = direct_pair(WITHHELD, as_the_proxy_withholds(tmp_path, *changes), overrides)
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, reason)


def test_not_withheld_flow_completes_without_privacy(tmp_path: Path) -> None:
    trunk, pbx = direct_pair(NOT_WITHHELD, edited_scenarios(tmp_path, {}))
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), calls=1)


def test_not_withheld_trunk_side_fails_a_call_that_still_asks_for_privacy(
    tmp_path: Path,
) -> None:
    """pbx_uac_privacy.xml sends Privacy: id, and trunk_uas_not_withheld.xml notices it."""
    trunk, pbx = direct_pair(PRIVACY_ASKED, edited_scenarios(tmp_path, {}))
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, "regexp 'Privacy[[:blank:]]*:'")


def test_the_privacy_pbx_scenario_completes_a_call(tmp_path: Path) -> None:
    flow = (PBX_HANGS_UP[0], "pbx_uac_privacy.xml")
    trunk, pbx = direct_pair(flow, edited_scenarios(tmp_path, {}))
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), calls=1)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"expected_number": "028880001"}, "strcmp from_user"),
        ({"expected_host": "sip.provider.example"}, "strcmp from_host"),
    ],
)
def test_not_withheld_trunk_side_checks_number_and_host(
    tmp_path: Path, overrides: dict[str, str], reason: str
) -> None:
    trunk, pbx = direct_pair(NOT_WITHHELD, edited_scenarios(tmp_path, {}), overrides)
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, reason)

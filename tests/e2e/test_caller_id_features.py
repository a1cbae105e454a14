"""Issue 9 end to end: real proxy, real SIPp. The trunk side checks From, P-Asserted-Identity and
Privacy of a withheld call, the number format of a trunk configured as national, and an emergency
call the phone asked to withhold (never withheld). The PBX side checks, as always, that every
response and the trunk's requests carry its own From back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.e2e.calls import Outbound, outbound_sides
from tests.e2e.conftest import EXAMPLE_RULES, StartProxy
from tests.e2e.sipp import assert_all_succeeded, run_pair

WITHHELD = ("trunk_uas_withheld.xml", "pbx_uac_call.xml")
WITHHELD_BY_PHONE = ("trunk_uas_withheld.xml", "pbx_uac_privacy.xml")
SHOWN = ("trunk_uas_not_withheld.xml", "pbx_uac_call.xml")
SHOWN_ALTHOUGH_ASKED = ("trunk_uas_not_withheld.xml", "pbx_uac_privacy.xml")

RULES = EXAMPLE_RULES.replace('  "1002": default\n', '  "1002": default\n  "1003": anonymous\n')
NATIONAL_TRUNK = 'trunks:\n  "1": {number_format: national, host: "sip.provider.example"}\n'


def call_through(
    start_proxy: StartProxy,
    rules_file: Path,
    tmp_path: Path,
    *,
    rules: str,
    user: str,
    dialled: str,
    flow: tuple[str, str],
    number: str,
    display: str,
    host: str | None = None,
    transport: str = "udp",
) -> None:
    rules_file.write_text(rules)
    proxy = start_proxy(transport)
    trunk, pbx = outbound_sides(Outbound(user, dialled, number), proxy, flow)
    variables = {
        "expected_number": number,
        "expected_display": display,
        "expected_host": host or proxy.trunk.host,
    }
    trunk = dataclasses.replace(trunk, variables=variables)
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), 1, proxy.log_tail())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_withheld_user_reaches_the_trunk_anonymous_with_privacy_id_and_the_number_in_pai(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path, transport: str
) -> None:
    call_through(
        start_proxy, rules_file, tmp_path, rules=RULES, user="1003", dialled="00442079460000",
        flow=WITHHELD, number="+442071234567", display="Anonymous", transport=transport,
    )


def test_privacy_id_from_the_phone_is_kept_withheld(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path
) -> None:
    call_through(
        start_proxy, rules_file, tmp_path, rules=RULES, user="1001", dialled="00442079460000",
        flow=WITHHELD_BY_PHONE, number="+3228880001", display="Anonymous",
    )


def test_a_trunk_configured_as_national_gets_the_national_number_at_its_realm(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path
) -> None:
    call_through(
        start_proxy, rules_file, tmp_path, rules=RULES + NATIONAL_TRUNK, user="1001",
        dialled="00442079460000", flow=SHOWN, number="028880001", display="+3228880001",
        host="sip.provider.example",
    )


@pytest.mark.parametrize("user", ["1001", "1003"])
def test_an_emergency_call_is_never_withheld(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path, user: str
) -> None:
    """112 from a phone that asked for Privacy: id: From shows the user's own number, or the
    default for a withheld user, and no Privacy header reaches the trunk."""
    number = "+3228880001" if user == "1001" else "+3228880000"
    call_through(
        start_proxy, rules_file, tmp_path, rules=RULES, user=user, dialled="112",
        flow=SHOWN_ALTHOUGH_ASKED, number=number, display=number,
    )


def test_the_log_line_names_the_step(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path
) -> None:
    rules_file.write_text(RULES)
    proxy = start_proxy()
    trunk, pbx = outbound_sides(Outbound("1003", "00442079460000", "+442071234567"), proxy,
                                WITHHELD)
    trunk = dataclasses.replace(
        trunk,
        variables={"expected_number": "+442071234567", "expected_display": "Anonymous",
                   "expected_host": proxy.trunk.host},
    )
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), 1, proxy.log_tail())
    proxy.wait_for_log("shown=+442071234567 step=step 2 privacy=id")


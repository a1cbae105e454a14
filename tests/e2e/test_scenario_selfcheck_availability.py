"""The trunk-availability SIPp scenarios checked without the proxy, like test_scenario_selfcheck:
trunk_uas_options_call.xml answers keepalives and still fails a call whose identity is wrong;
pbx_uac_unavailable_at_once.xml completes on a 503 only."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e.ports import free_port
from tests.e2e.sipp import SippProcess, SippSide, assert_all_succeeded, run_client, run_pair
from tests.e2e.test_scenario_selfcheck import HOST, PBX_USER, edited_scenarios

EXPECTED = {
    "expected_number": PBX_USER,
    "expected_display": f"Extension {PBX_USER}",
    "expected_host": HOST,
}


def options(port: int, local_port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bKselfcheck{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:keepalive@{HOST}>;tag=k{n}\r\nTo: <sip:{HOST}:{port}>\r\n"
        f"Call-ID: keepalive-{n}@{HOST}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def keepalive_trunk_call(tmp_path: Path, expected_number: str) -> tuple[SippProcess, int]:
    """Run trunk_uas_options_call.xml, send it two keepalives (each must get a 200), then one
    direct call from pbx_uac_call.xml; the trunk SIPp is left running (quit it)."""
    scenarios = edited_scenarios(tmp_path, {})
    port = free_port()
    trunk = SippProcess(
        SippSide("trunk", "trunk_uas_options_call.xml", port,
                 {**EXPECTED, "expected_number": expected_number},
                 calls=1000, timeout_s=40, scenario_dir=scenarios),
        tmp_path,
    )  # fmt: skip
    trunk.start()
    trunk.wait_bound()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober:
        prober.bind((HOST, 0))
        prober.settimeout(5)
        for n in (1, 2):
            prober.sendto(options(port, prober.getsockname()[1], n), (HOST, port))
            assert prober.recv(65536).startswith(b"SIP/2.0 200 OK\r\n")
    pbx = SippSide("pbx", "pbx_uac_call.xml", free_port(),
                   {"pbx_user": PBX_USER, "destination": "00442079460000"},
                   remote=f"{HOST}:{port}", scenario_dir=scenarios)  # fmt: skip
    pbx_result = run_client(pbx, tmp_path)
    return trunk, 0 if pbx_result.returncode == 0 and pbx_result.successful == 1 else 1


def test_the_keepalive_trunk_answers_options_and_completes_a_right_call(tmp_path: Path) -> None:
    trunk, pbx_failed = keepalive_trunk_call(tmp_path, PBX_USER)
    try:
        result = trunk.quit()
    finally:
        trunk.kill()
    assert pbx_failed == 0
    assert result.returncode == 0 and result.successful == 3 and result.failed == 0, (
        result.report()
    )


def test_the_keepalive_trunk_fails_a_call_with_the_wrong_number(tmp_path: Path) -> None:
    trunk, _ = keepalive_trunk_call(tmp_path, "+3228880000")
    try:
        result = trunk.quit()
    finally:
        trunk.kill()
    assert result.returncode == 1 and result.failed == 1 and result.successful == 2, (
        result.report()
    )
    assert "strcmp from_user" in result.errors, result.report()


@pytest.mark.parametrize(("status", "completes"), [("503", True), ("500", False)])
def test_the_at_once_refusal_scenario_completes_on_503_only(
    tmp_path: Path, status: str, completes: bool
) -> None:
    scenarios = edited_scenarios(tmp_path, {})
    port = free_port()
    trunk = SippSide("trunk", "trunk_uas_reject.xml", port, {**EXPECTED, "status": status},
                     timeout_s=40, scenario_dir=scenarios)  # fmt: skip
    pbx = SippSide("pbx", "pbx_uac_unavailable_at_once.xml", free_port(),
                   {"pbx_user": PBX_USER, "destination": "00442079460000"},
                   remote=f"{HOST}:{port}", scenario_dir=scenarios)  # fmt: skip
    trunk_result, pbx_result = run_pair(trunk, pbx, tmp_path)
    if completes:
        assert_all_succeeded([trunk_result, pbx_result], calls=1)
    else:
        assert pbx_result.returncode == 1 and pbx_result.failed == 1, pbx_result.report()
        assert "unexpected message" in pbx_result.errors.lower(), pbx_result.report()

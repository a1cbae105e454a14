"""Interop through the proxy: SIPp's own built-in scenarios, reliable provisional responses
(RFC 3262, PRACK) and a re-INVITE from the trunk in the middle of a call.

The PRACK and re-INVITE checks live in their scenarios (sipp_scenarios/*_prack.xml,
*_reinvite.xml); each is first shown to fail when run directly, without the proxy, against a
partner that breaks exactly what it checks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.e2e.calls import Outbound, outbound_sides
from tests.e2e.conftest import StartProxy
from tests.e2e.ports import free_port
from tests.e2e.proxy_process import ProxyProcess
from tests.e2e.sipp import (
    SippResult,
    SippSide,
    assert_all_succeeded,
    assert_side_failed,
    run_pair,
)
from tests.e2e.test_scenario_selfcheck import HOST, direct_pair, edited_scenarios

PRACK = ("trunk_uas_prack.xml", "pbx_uac_prack.xml")
REINVITE = ("trunk_uas_reinvite.xml", "pbx_uac_reinvite.xml")
RACK = "1 1 INVITE"  # the PRACK for the first reliable provisional (RSeq 1) of CSeq 1 INVITE

# SIPp's built-in uac sends From `sipp <sip:sipp@IP:PORT>` to the Request-URI user `service`:
# an unlisted user and no phone number, so the example rules' default number is shown.
BUILTIN_CALLS = 50
BUILTIN_RATE = 25.0
BUILTIN_USER = "sipp"
DEFAULT_NUMBER = "+3228880000"
MESSAGE_SEPARATOR = "-" * 47


# --- SIPp's built-in uac and uas -------------------------------------------------------------


def builtin_sides(
    trunk_host: str,
    trunk_port: int,
    transport: str,
    remote: str,
    pbx_mode: str,
    calls: int = BUILTIN_CALLS,
) -> tuple[SippSide, SippSide]:
    """`sipp -sn uas` as the trunk on trunk_host:trunk_port, `sipp -sn uac` as the PBX calling
    `remote` in -t `pbx_mode` (u1, t1, or tn: one TCP connection per call)."""
    timeout_s = 30 + int(calls / BUILTIN_RATE)
    trunk = SippSide(
        name="trunk",
        scenario="uas",
        builtin=True,
        host=trunk_host,
        port=trunk_port,
        transport=transport,
        calls=calls,
        timeout_s=timeout_s + 10,
    )
    pbx = SippSide(
        name="pbx",
        scenario="uac",
        builtin=True,
        host=HOST,
        port=free_port(),
        transport=transport,
        mode=pbx_mode,
        # tn opens a socket per call; SIPp refuses its default 50000 above the open-file limit
        extra_args=("-max_socket", str(4 * calls)) if pbx_mode == "tn" else (),
        remote=remote,
        calls=calls,
        rate=BUILTIN_RATE,
        timeout_s=timeout_s,
    )
    return trunk, pbx


def received_from_users(
    result: SippResult, workdir: Path, method: str = "INVITE"
) -> dict[str, str]:
    """Call-ID -> From user part of every `method` request this side received, read from its
    full -trace_msg log (the result only keeps its tail)."""
    [log] = workdir.glob(f"sipp*-{result.side.name}-{result.side.port}.messages.log")
    users: dict[str, str] = {}
    for entry in log.read_text(errors="replace").split(MESSAGE_SEPARATOR):
        lines = entry.strip().splitlines()
        if len(lines) < 3 or " message received " not in lines[1]:
            continue
        message = [line for line in lines[2:] if line.strip()]
        if not message or not message[0].startswith(method + " "):
            continue
        headers: dict[str, str] = {}
        for line in message[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        uri = headers["from"].split("<sip:", 1)[1]
        users[headers["call-id"]] = uri.split("@", 1)[0]
    return users


@pytest.mark.parametrize(
    ("transport", "pbx_mode"),
    [("udp", "u1"), ("tcp", "t1"), ("tcp", "tn")],
    ids=["udp", "tcp", "tcp-connection-per-call"],
)
def test_sipp_builtin_uac_calls_builtin_uas_through_the_proxy(
    start_proxy: StartProxy, tmp_path: Path, transport: str, pbx_mode: str
) -> None:
    proxy = start_proxy(transport)
    trunk, pbx = builtin_sides(
        proxy.trunk.host, proxy.trunk.port, transport, proxy.listen.address(), pbx_mode
    )
    trunk_result, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert_all_succeeded([trunk_result, pbx_result], BUILTIN_CALLS, proxy.log_tail())
    # The built-in uas checks nothing: see for ourselves that every call showed the default number,
    # in the ACK and BYE too. The built-in uas does not echo Record-Route, so those arrive without
    # our token: the proxy's dialog memory rewrites them.
    for method in ("INVITE", "ACK", "BYE"):
        users = received_from_users(trunk_result, tmp_path, method)
        assert len(users) == BUILTIN_CALLS, (method, users)
        assert set(users.values()) == {DEFAULT_NUMBER}, (method, users)


def test_builtin_uac_shows_its_own_user_without_the_proxy(tmp_path: Path) -> None:
    """The From check above can fail: straight to the uas, the INVITEs carry `sipp`."""
    trunk_port = free_port()
    trunk, pbx = builtin_sides(HOST, trunk_port, "udp", f"{HOST}:{trunk_port}", "u1", calls=2)
    trunk_result, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert_all_succeeded([trunk_result, pbx_result], calls=2)
    assert set(received_from_users(trunk_result, tmp_path).values()) == {BUILTIN_USER}


# --- PRACK (RFC 3262) and a re-INVITE from the trunk --------------------------------------------

CALL = Outbound("1001", "00442079460000", "+3228880001")


def place(
    proxy: ProxyProcess, workdir: Path, flow: tuple[str, str], trunk_extra: dict[str, str]
) -> None:
    trunk, pbx = outbound_sides(CALL, proxy, flow)
    trunk = dataclasses.replace(trunk, variables={**trunk.variables, **trunk_extra})
    assert_all_succeeded(run_pair(trunk, pbx, workdir), calls=1, context=proxy.log_tail())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_prack_for_a_reliable_183_crosses_the_proxy_with_identities_kept_apart(
    start_proxy: StartProxy, tmp_path: Path, transport: str
) -> None:
    """183 (Require: 100rel, RSeq 1) -> PRACK (RAck 1 1 INVITE) in-dialog -> 200 PRACK -> 200
    INVITE: the trunk sees the rewritten number in the PRACK's From, the PBX its own From in the
    183 and both 200s."""
    place(start_proxy(transport), tmp_path, PRACK, {"expected_rack": RACK})


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_reinvite_from_the_trunk_mid_call_restores_to_for_the_pbx_and_not_for_the_trunk(
    start_proxy: StartProxy, tmp_path: Path, transport: str
) -> None:
    """The trunk's re-INVITE reaches the PBX with To = its original From; the 200 reaches the
    trunk with To = the rewritten identity it knows the caller by."""
    place(start_proxy(transport), tmp_path, REINVITE, {})


# --- the PRACK and re-INVITE scenarios' checks can fail ---------------------------------------


@pytest.mark.parametrize(
    ("flow", "overrides"),
    [(PRACK, {"expected_rack": RACK}), (REINVITE, {})],
    ids=["prack", "reinvite"],
)
def test_flow_completes_directly_when_everything_is_as_expected(
    tmp_path: Path, flow: tuple[str, str], overrides: dict[str, str]
) -> None:
    trunk, pbx = direct_pair(flow, edited_scenarios(tmp_path, {}), overrides)
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), calls=1)


# One (scenario file, old, new) edit of a direct pair, the side that must fail its call, and a
# piece of the error it must log. Replacements apply to the first occurrence only.
Broken = tuple[str, str, str, str, str]

FOREIGN_FROM = "From: <sip:+3228880001@127.0.0.1>;tag=[pid]SIPpTag00[call_number]"
EXTENSION_FROM = "<sip:1001@[local_ip]>;tag=[pid]SIPpTag00[call_number]"
PRACK_FROM = "From: [$my_from]\n      [last_To:]\n      Call-ID: [call_id]\n      CSeq: 2 PRACK"
BYE_FROM = "From: [$my_from]\n      [last_To:]\n      Call-ID: [call_id]\n      CSeq: 3 BYE"
RESPONSE_FROM = "SIP/2.0 {}\n      [last_Via:]\n      [last_From:]"
REINVITE_ANSWER = "SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]"

PRACK_BROKEN: dict[str, Broken] = {
    "prack-lost-the-rewritten-number": (
        "pbx_uac_prack.xml", PRACK_FROM, PRACK_FROM.replace("[$my_from]", EXTENSION_FROM),
        "trunk", 'strcmp from_user:"1001"',
    ),
    "rack-for-another-cseq": (
        "pbx_uac_prack.xml", "RAck: 1 1 INVITE", "RAck: 1 2 INVITE",
        "trunk", 'strcmp rack:"1 2 INVITE"',
    ),
    "100rel-not-supported": (
        "pbx_uac_prack.xml", "      Supported: 100rel\n", "      Supported: timer, 100relx\n",
        "trunk", "regexp '(^|[,[:blank:]])100rel",
    ),
    "bye-lost-the-rewritten-number": (
        "pbx_uac_prack.xml", BYE_FROM, BYE_FROM.replace("[$my_from]", EXTENSION_FROM),
        "trunk", 'strcmp from_user:"1001"',
    ),
    "183-not-reliable": (
        "trunk_uas_prack.xml", "      Require: 100rel\n", "      Require: timer, 100relx\n",
        "pbx", "regexp '(^|[,[:blank:]])100rel",
    ),
    "183-without-rseq": (
        "trunk_uas_prack.xml", "      RSeq: 1\n", "      RSeq: one\n",
        "pbx", "regexp '^[[:blank:]]*[0-9]+[[:blank:]]*$'",
    ),
    "183-not-the-pbx-from": (
        "trunk_uas_prack.xml", RESPONSE_FROM.format("183 Session Progress"),
        RESPONSE_FROM.format("183 Session Progress").replace("[last_From:]", FOREIGN_FROM),
        "pbx", "strcmp seen_from",
    ),
    "prack-200-not-the-pbx-from": (
        "trunk_uas_prack.xml", RESPONSE_FROM.format("200 OK"),
        RESPONSE_FROM.format("200 OK").replace("[last_From:]", FOREIGN_FROM),
        "pbx", "strcmp seen_from",
    ),
    "invite-200-not-the-pbx-from": (
        "trunk_uas_prack.xml", "From: [$invite_from]",
        f"{FOREIGN_FROM}\n      X-Was: [$invite_from]",
        "pbx", "strcmp seen_from",
    ),
}  # fmt: skip

REINVITE_BROKEN: dict[str, Broken] = {
    "to-not-the-pbx-from": (
        "trunk_uas_reinvite.xml", "To: [$invite_from]",
        "To: <sip:+3228880001@127.0.0.1>\n      X-Was: [$invite_from]",
        "pbx", "strcmp seen_to",
    ),
    "from-not-the-trunk-identity": (
        "trunk_uas_reinvite.xml", "From: [$invite_to];tag=[pid]SIPpTag01[call_number]\n      To",
        "From: [$invite_to];tag=other\n      To",
        "pbx", "strcmp seen_peer",
    ),
    "200-shows-the-extension": (
        "pbx_uac_reinvite.xml", REINVITE_ANSWER,
        REINVITE_ANSWER.replace("[last_To:]", f"To: {EXTENSION_FROM}"),
        "trunk", 'strcmp to_user:"1001"',
    ),
    "200-shows-another-host": (
        "pbx_uac_reinvite.xml", REINVITE_ANSWER,
        REINVITE_ANSWER.replace(
            "[last_To:]", "To: <sip:[$pbx_user]@127.0.0.9>;tag=[pid]SIPpTag00[call_number]"
        ),
        "trunk", 'strcmp to_host:"127.0.0.9"',
    ),
    "200-to-not-the-invites-from": (
        "pbx_uac_reinvite.xml", REINVITE_ANSWER,
        REINVITE_ANSWER.replace(
            "[last_To:]", "To: <sip:[$pbx_user]@[local_ip]>;tag=[pid]SIPpTag00[call_number]"
        ),
        "trunk", "strcmp seen_to",
    ),
}  # fmt: skip


def assert_broken_pair_fails(
    tmp_path: Path, flow: tuple[str, str], overrides: dict[str, str], broken: Broken
) -> None:
    name, old, new, side, reason = broken
    trunk, pbx = direct_pair(flow, edited_scenarios(tmp_path, {name: (old, new)}), overrides)
    trunk_result, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result if side == "trunk" else pbx_result, reason)


@pytest.mark.parametrize("broken", PRACK_BROKEN.values(), ids=PRACK_BROKEN.keys())
def test_prack_scenarios_fail_the_call_on_what_they_check(tmp_path: Path, broken: Broken) -> None:
    assert_broken_pair_fails(tmp_path, PRACK, {"expected_rack": RACK}, broken)


def test_prack_trunk_side_fails_on_an_unexpected_rack(tmp_path: Path) -> None:
    """expected_rack is what the trunk compares the RAck with."""
    trunk, pbx = direct_pair(PRACK, edited_scenarios(tmp_path, {}), {"expected_rack": "1 2 INVITE"})
    trunk_result, _ = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(trunk_result, 'strcmp rack:"1 1 INVITE"')


@pytest.mark.parametrize("broken", REINVITE_BROKEN.values(), ids=REINVITE_BROKEN.keys())
def test_reinvite_scenarios_fail_the_call_on_what_they_check(
    tmp_path: Path, broken: Broken
) -> None:
    assert_broken_pair_fails(tmp_path, REINVITE, {}, broken)

"""A proxy restarted mid-call keeps restoring: the caller's identity rides in the Record-Route.

The PBX places a call through the proxy and holds it after the ACK (sipp_scenarios/
pbx_uac_call_hold.xml); during the hold the proxy gets SIGTERM (it must exit 0) and a new proxy
process starts on the same ports. The new process never saw the INVITE: all it knows about the
call is the HMAC-protected token in the route set of the PBX's BYE.

With the same --secret it rewrites the BYE's From for the trunk (trunk_uas_call.xml fails the call
otherwise) and gives the PBX its own From back in the 200. With another secret the token does not
verify: the BYE is answered 400 and nothing reaches the trunk, whose call then times out waiting
for its BYE. The PBX scenario passes only with the answer it is told to expect (bye_answer); the
last two tests check that verdict without the proxy. UDP only: SIPp's TCP sockets do not survive
the proxy closing its connections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from tests.e2e.calls import Outbound, outbound_sides
from tests.e2e.conftest import StartProxy
from tests.e2e.ports import wait_until
from tests.e2e.proxy_process import ProxyProcess
from tests.e2e.sipp import (
    SippProcess,
    SippResult,
    SippSide,
    assert_all_succeeded,
    assert_side_failed,
    run_pair,
)
from tests.e2e.test_scenario_selfcheck import direct_pair, edited_scenarios

HELD_CALL = ("trunk_uas_call.xml", "pbx_uac_call_hold.xml")
CALL = Outbound("1001", "00442079460000", "+3228880001")
SECRET = "restart-secret-kept-across-restarts"
OTHER_SECRET = "a-different-secret-after-the-restart"
# How long the PBX holds the call between its ACK and its BYE; the restart must fit in it.
HOLD_MS = 4000
# Bound on the whole call setup, up to the ACK reaching the trunk.
ACK_TIMEOUT_S = 15.0
# With the other secret the trunk waits this long for a BYE that must never come: the hold plus
# ample time for a forwarded BYE to arrive, so its timeout means "nothing was forwarded".
NO_BYE_RECV_TIMEOUT_MS = HOLD_MS + 3000
# How much of the trunk's message log to search for a received BYE (the whole of it).
ALL_LINES = 100_000
REFUSED_TOKEN = "caller-identity token in Route failed authentication"
# SIPp's error when trunk_uas_call.xml's message 5 (its <recv request="BYE">) never comes.
TRUNK_BYE_TIMEOUT = "receive timeout on message trunk_uas_call:5 "


@dataclass(frozen=True)
class Restarted:
    """The two SIPp results, whether the trunk ever received a BYE, and the proxy before and
    after the restart."""

    trunk: SippResult
    pbx: SippResult
    trunk_received_bye: bool
    before: ProxyProcess
    after: ProxyProcess

    def context(self) -> str:
        return (
            f"before the restart:\n{self.before.log_tail()}\n"
            f"after the restart:\n{self.after.log_tail()}"
        )


def _received(sipp: SippProcess, method: str) -> bool:
    """Whether SIPp's whole message log shows a `method` request received (not sent, as the BYE
    SIPp sends for a call it aborts would be)."""
    entries = sipp.result(message_lines=ALL_LINES).messages.split("\n---------------")
    return any("message received" in entry and f"\n{method} sip:" in entry for entry in entries)


def _pbx_sent_bye(pbx: SippProcess) -> bool:
    return "\nBYE sip:" in pbx.result(message_lines=ALL_LINES).messages


def call_through_a_restart(
    start_proxy: StartProxy,
    workdir: Path,
    new_secret: str,
    bye_answer: str,
    trunk_recv_timeout_ms: int | None = None,
) -> Restarted:
    """Place the held call, restart the proxy (same ports, `new_secret`) while the call is held,
    and collect both sides once the PBX has hung up."""
    before = start_proxy(secret=SECRET)
    trunk_side, pbx_side = outbound_sides(CALL, before, HELD_CALL)
    pbx_side = replace(
        pbx_side,
        variables={**pbx_side.variables, "hold_ms": str(HOLD_MS), "bye_answer": bye_answer},
    )
    if trunk_recv_timeout_ms is not None:
        trunk_side = replace(trunk_side, recv_timeout_ms=trunk_recv_timeout_ms)

    trunk = SippProcess(trunk_side, workdir)
    pbx = SippProcess(pbx_side, workdir)
    trunk.start()
    try:
        trunk.wait_bound()
        pbx.start()
        try:
            wait_until(lambda: _received(trunk, "ACK"), ACK_TIMEOUT_S, "the ACK to reach the trunk")
            assert not _pbx_sent_bye(pbx), "the hold ended before the proxy was stopped"
            restart_started = time.monotonic()
            code = before.stop()
            assert code == 0, f"proxy exited with {code} on SIGTERM\n{before.log_tail()}"
            after = start_proxy(secret=new_secret, same_ports_as=before)
            restart_s = time.monotonic() - restart_started
            # The BYE must meet the new process, not a closed port; raise HOLD_MS if this fails.
            assert not _pbx_sent_bye(pbx), (
                f"the PBX sent its BYE before the new proxy was ready (restart took "
                f"{restart_s:.2f}s, hold {HOLD_MS} ms)\n{after.log_tail()}"
            )
            pbx_result = pbx.finish()
        finally:
            pbx.kill()
        trunk_result = trunk.finish()
    finally:
        trunk.kill()
    return Restarted(trunk_result, pbx_result, _received(trunk, "BYE"), before, after)


def test_restart_with_the_same_secret_keeps_rewriting_and_restoring_the_held_call(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    run = call_through_a_restart(start_proxy, tmp_path, new_secret=SECRET, bye_answer="200")

    # trunk: the BYE carried +3228880001 in From; PBX: the 200 to it carried its own From.
    assert_all_succeeded([run.trunk, run.pbx], calls=1, context=run.context())
    # The INVITE (and its caller-ID decision) went through the first process only: the second
    # one restored the call from the BYE's route set alone.
    decision = f"shown={CALL.expected_number}"
    assert decision in run.before.log_file.read_text(), run.context()
    after_log = run.after.log_file.read_text()
    assert "shown=" not in after_log and "refused" not in after_log, run.context()


def test_restart_with_another_secret_refuses_the_bye_with_400_and_forwards_nothing(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    run = call_through_a_restart(
        start_proxy,
        tmp_path,
        new_secret=OTHER_SECRET,
        bye_answer="400",
        trunk_recv_timeout_ms=NO_BYE_RECV_TIMEOUT_MS,
    )

    # PBX: its BYE got 400 (200 would fail the call), with its own From.
    assert_all_succeeded([run.pbx], calls=1, context=run.context())
    assert f"refused BYE from 127.0.0.1:{run.pbx.side.port} with 400: {REFUSED_TOKEN}" in (
        run.after.log_file.read_text()
    ), run.context()
    # Trunk: no BYE ever arrived, so its call failed on the receive timeout of its BYE <recv>.
    assert_side_failed(run.trunk, TRUNK_BYE_TIMEOUT, run.context())
    assert not run.trunk_received_bye, f"{run.trunk.report()}\n{run.context()}"


# The PBX scenario's verdict on the BYE's answer, checked without the proxy (as in
# test_scenario_selfcheck.py): the trunk answers the BYE 200 itself.


def _direct_held_pair(workdir: Path, bye_answer: str) -> tuple[SippSide, SippSide]:
    trunk, pbx = direct_pair(HELD_CALL, edited_scenarios(workdir, {}))
    variables = {**pbx.variables, "hold_ms": "200", "bye_answer": bye_answer}
    return trunk, replace(pbx, variables=variables)


def test_held_call_scenario_completes_when_the_bye_gets_200(tmp_path: Path) -> None:
    trunk, pbx = _direct_held_pair(tmp_path, "200")
    assert_all_succeeded(run_pair(trunk, pbx, tmp_path), calls=1)


def test_held_call_scenario_fails_when_the_bye_gets_200_but_400_is_expected(
    tmp_path: Path,
) -> None:
    trunk, pbx = _direct_held_pair(tmp_path, "400")
    _, pbx_result = run_pair(trunk, pbx, tmp_path)
    assert_side_failed(pbx_result, 'strcmp bye_status:"200" and bye_answer:"400"')

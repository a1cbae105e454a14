"""Scale-out: Kamailio's dispatcher (deploy/kamailio.cfg) on both sides of two callerid-proxy
instances sharing --secret and naming each other with --peer.

Calls are placed through Kamailio and held; one instance is killed while some of its calls are
established; their BYEs (the PBX hangs up) come back through Kamailio, which sends them to the
live instance, which restores the caller ID from the dead one's Record-Route token. The
trunk's scenario checks the From of every INVITE and BYE, the PBX's the restored From of every
answer; afterwards new calls all go to the live instance. 0 failed calls on either side.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.calls import Outbound, loopback
from tests.e2e.ports import free_port, is_bound, wait_until
from tests.e2e.proxy_process import Endpoint, ProxyProcess
from tests.e2e.sipp import SCENARIO_DIR, SippProcess, SippSide, assert_all_succeeded

KAMAILIO = shutil.which("kamailio") or next(
    (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(KAMAILIO is None, reason="kamailio (Debian package) not installed")

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio.cfg"
TRUNK_HOST = "127.0.0.3"
CALL = Outbound("1001", "00442079460000", "+3228880001")
HELD_CALLS, HOLD_MS = 8, 7000
LATER_CALLS = 4


class Kamailio:
    """deploy/kamailio.cfg in the foreground on a free loopback port, runtime files in `workdir`."""

    def __init__(self, workdir: Path, instances: list[int], pbx: Endpoint, trunk: Endpoint) -> None:
        self.port, self.trunk_port = free_port(), free_port()
        self.pbx, self.trunk = pbx, trunk
        self.log = workdir / "kamailio.log"
        runtime = workdir / "kamailio-run"
        runtime.mkdir()
        dispatcher_list = workdir / "dispatcher.list"
        dispatcher_list.write_text("".join(f"1 sip:127.0.0.1:{port}\n" for port in instances))
        assert KAMAILIO is not None
        self.command = [
            KAMAILIO, "-f", str(CONFIG), "-DD", "-E", "-m", "256", "-M", "8", "-n", "2",
            "-Y", str(runtime), "-w", str(workdir), "-P", str(runtime / "kamailio.pid"),
            "-l", f"udp:127.0.0.1:{self.port}", "-l", f"udp:127.0.0.1:{self.trunk_port}",
            "-A", "LISTEN_ON_COMMAND_LINE", "-A", f'DISPATCHER_LIST="{dispatcher_list}"',
            "-A", 'PBX_SIDE_IP="127.0.0.1"', "-A", f"PBX_SIDE_PORT={self.port}",
            "-A", 'TRUNK_SIDE_IP="127.0.0.1"', "-A", f"TRUNK_SIDE_PORT={self.trunk_port}",
            "-A", f'PBX_URI="sip:{pbx.address()}"', "-A", f'TRUNK_URI="sip:{trunk.address()}"',
            "-A", "PING_INTERVAL=1", "-A", "FR_TIMER=1000",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)

        def bound() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"kamailio exited {self.process.returncode}\n{self.tail()}")
            return all(is_bound("127.0.0.1", port, "udp") for port in (self.port, self.trunk_port))

        wait_until(bound, 15.0, "kamailio to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "--- kamailio log (tail):\n" + "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def stack(tmp_path: Path, rules_file: Path) -> Iterator[tuple[Kamailio, list[ProxyProcess]]]:
    ports = [free_port(), free_port()]
    trunk = Endpoint(TRUNK_HOST, free_port(TRUNK_HOST))
    kamailio = Kamailio(tmp_path, ports, loopback(free_port()), trunk)
    proxies = [
        ProxyProcess(
            workdir=tmp_path, rules=rules_file, listen=loopback(port),
            pbx=loopback(kamailio.port), trunk=loopback(kamailio.trunk_port),
            name=f"instance{index}",
            extra_args=["--peer", f"127.0.0.1:{ports[1 - index]}"],
        )
        for index, port in enumerate(ports)
    ]
    try:
        for proxy in proxies:
            proxy.start()
        kamailio.start()
        yield kamailio, proxies
    finally:
        kamailio.stop()
        for proxy in proxies:
            proxy.stop()


@dataclass(frozen=True)
class Flow:
    """Who hangs up the held calls: the scenarios of both sides, and which side's log shows
    the BYE arriving."""

    trunk_scenario: str
    pbx_scenario: str
    bye_seen_by: str  # "trunk" or "pbx"


PBX_HANGS_UP = Flow("trunk_uas_call.xml", "pbx_uac_call_hold.xml", "trunk")
TRUNK_HANGS_UP = Flow("trunk_uas_hangup_held.xml", "pbx_uac_remote_hangup.xml", "pbx")


def scenarios_with_a_holding_trunk(workdir: Path) -> Path:
    """sipp_scenarios/ plus trunk_uas_hangup.xml holding the call `hold_ms` before its BYE."""
    target = workdir / "scenarios"
    shutil.copytree(SCENARIO_DIR, target)
    text = (SCENARIO_DIR / "trunk_uas_hangup.xml").read_text()
    globals_line = '<Global variables="expected_number,expected_display,expected_host" />'
    bye = '  <send retrans="500">\n    <![CDATA[\n\n      BYE'
    assert globals_line in text and text.count(bye) == 1, "trunk_uas_hangup.xml changed"
    text = text.replace(globals_line, globals_line.replace('host"', 'host,hold_ms"'))
    hold = ('  <nop><action><todouble assign_to="hold" variable="hold_ms" /></action></nop>\n'
            '  <pause variable="hold" />\n')
    (target / TRUNK_HANGS_UP.trunk_scenario).write_text(text.replace(bye, hold + bye))
    return target


def sides(
    flow: Flow, kamailio: Kamailio, scenarios: Path, calls: int, hold_ms: int
) -> tuple[SippSide, SippSide]:
    """The trunk (server, for `calls`) and the PBX (client) sides of `flow`; the one that
    hangs up holds each call `hold_ms`."""
    trunk_hold = {"hold_ms": str(hold_ms)} if flow is TRUNK_HANGS_UP else {}
    trunk = SippSide(
        name="trunk", scenario=flow.trunk_scenario, host=TRUNK_HOST, port=kamailio.trunk.port,
        variables=CALL.trunk_variables("127.0.0.1") | trunk_hold, calls=calls,
        timeout_s=40, scenario_dir=scenarios,
    )
    pbx = SippSide(
        name="pbx", scenario=flow.pbx_scenario, port=kamailio.pbx.port, scenario_dir=scenarios,
        remote=f"127.0.0.1:{kamailio.port}", calls=HELD_CALLS, rate=20, timeout_s=30,
        variables=CALL.pbx_variables() | (
            {"hold_ms": str(hold_ms), "bye_answer": "200"} if flow is PBX_HANGS_UP else {}),
    )
    return trunk, pbx


def received(messages: str, method: str, via_port: int) -> set[str]:
    """Call-IDs of the `method` requests a side got through the instance on `via_port`."""
    found = set()
    for chunk in messages.split("message received")[1:]:
        lines = chunk.split("\n")[1:]  # after " [N] bytes :"
        start = next((line for line in lines if line.strip()), "")
        if not start.startswith(f"{method} "):
            continue
        vias = "\n".join(line for line in lines if line.lower().startswith("via:"))
        call_id = next((line for line in lines if line.lower().startswith("call-id:")), "")
        if re.search(rf"127\.0\.0\.1:{via_port};", vias):
            found.add(call_id.split(":", 1)[1].strip())
    return found


@pytest.mark.parametrize("flow", [PBX_HANGS_UP, TRUNK_HANGS_UP], ids=["pbx-hangs-up",
                                                                   "trunk-hangs-up"])
def test_killing_one_instance_keeps_its_established_calls_and_new_calls_going(
    tmp_path: Path, stack: tuple[Kamailio, list[ProxyProcess]], flow: Flow
) -> None:
    kamailio, (doomed, survivor) = stack
    scenarios = scenarios_with_a_holding_trunk(tmp_path)
    trunk_side, pbx_held = sides(flow, kamailio, scenarios, HELD_CALLS + LATER_CALLS, HOLD_MS)
    trunk = SippProcess(trunk_side, tmp_path)
    trunk.start()
    try:
        trunk.wait_bound()
        held = SippProcess(pbx_held, tmp_path)
        held.start()
        wait_until(lambda: trunk.result(message_lines=100_000).messages.count("\nACK sip:")
                   >= HELD_CALLS, 15.0, "every held call to be established (ACKed at the trunk)")
        os.kill(doomed.pid, signal.SIGKILL)
        wait_until(lambda: f"instance down: sip:127.0.0.1:{doomed.listen.port}"
                   in kamailio.log.read_text(errors="replace"), 10.0, "the dispatcher to notice")
        held_result = held.finish()
        later_variables = {**pbx_held.variables}
        if "hold_ms" in later_variables:
            later_variables["hold_ms"] = "100"
        later = SippProcess(dataclasses.replace(
            pbx_held, calls=LATER_CALLS, variables=later_variables), tmp_path)
        later.start()
        later_result = later.finish()
        trunk_result = trunk.finish()
    finally:
        trunk.kill()
    context = survivor.log_tail() + "\n" + doomed.log_tail() + "\n" + kamailio.tail()
    assert_all_succeeded([held_result], HELD_CALLS, context)
    assert_all_succeeded([later_result], LATER_CALLS, context)
    assert_all_succeeded([trunk_result], HELD_CALLS + LATER_CALLS, context)
    at_trunk = trunk.result(message_lines=1_000_000).messages
    set_up_by_doomed = received(at_trunk, "INVITE", doomed.listen.port)
    assert set_up_by_doomed, "no held call went through the instance that was killed"
    bye_log = at_trunk if flow.bye_seen_by == "trunk" else held.result(1_000_000).messages
    assert set_up_by_doomed <= received(bye_log, "BYE", survivor.listen.port), context
    # Every other call, the later ones included, went through the survivor.
    by_survivor = received(at_trunk, "INVITE", survivor.listen.port)
    assert len(by_survivor) == HELD_CALLS + LATER_CALLS - len(set_up_by_doomed), context

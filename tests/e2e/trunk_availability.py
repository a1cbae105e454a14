"""Trunk availability flows with the real proxy and real SIPp (issue 8's targets), shared by
tests/e2e/test_trunk_availability.py (behaviour) and bench/failover_times.py (timings).

Each flow returns the times it measured from the SIPp message logs (both SIPps stamp messages
with the same wall clock); the test asserts behaviour, the bench prints the times.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.e2e.calls import Outbound
from tests.e2e.ports import free_port, wait_until
from tests.e2e.proxy_process import Endpoint, ProxyProcess
from tests.e2e.sipp import SippProcess, SippResult, SippSide, assert_all_succeeded, run_client

PRIMARY_HOST = "127.0.0.1"
SECONDARY_HOST = "127.0.0.3"  # its own host: the From host the trunk checks proves the rebuild
CALL = Outbound("1001", "00442079460000", "+3228880001")
KEEPALIVE_TRUNK = "trunk_uas_options_call.xml"  # answers OPTIONS too
ANSWER = "trunk_uas_call.xml"
REJECT = "trunk_uas_reject.xml"
PBX_CALL = "pbx_uac_call.xml"
PBX_REFUSED = "pbx_uac_unavailable_at_once.xml"
STATE_TIMEOUT_S = 15.0
_SEPARATOR = "-" * 47 + " "


# ----------------------------------------------------------------- SIPp message logs
@dataclass(frozen=True)
class Logged:
    """One message in a SIPp -trace_msg log."""

    at: float  # seconds since the epoch
    sent: bool
    start_line: str
    call_id: str
    cseq_method: str


def read_log(path: Path | None) -> list[Logged]:
    if path is None or not path.exists():
        return []
    blocks = path.read_text(errors="replace").split(_SEPARATOR)[1:]
    return [entry for entry in map(_parse_block, blocks) if entry is not None]


def _parse_block(block: str) -> Logged | None:
    lines = block.splitlines()
    if len(lines) < 4:
        return None
    try:
        at = datetime.strptime(lines[0].strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in lines[4:]:
        name, colon, value = line.partition(":")
        if not colon or not line.strip():
            break
        headers.setdefault(name.strip().lower(), value.strip())
    method = headers.get("cseq", " ").split()[-1]
    return Logged(at, " sent " in lines[1], lines[3].strip(), headers.get("call-id", ""), method)


def invites(log: Sequence[Logged], *, sent: bool) -> list[Logged]:
    return [m for m in log if m.sent is sent and m.start_line.startswith("INVITE ")]


def first_response(log: Sequence[Logged], call_id: str, status: int, *, sent: bool) -> Logged:
    for message in log:
        if (message.sent is sent and message.call_id == call_id and message.cseq_method == "INVITE"
                and message.start_line.startswith(f"SIP/2.0 {status} ")):
            return message
    raise AssertionError(f"no {status} to the INVITE of {call_id} in the log")


def pbx_invite_to(result: SippResult, status: int) -> tuple[float, float]:
    """(when the PBX sent its INVITE, seconds until it received `status`)."""
    log = read_log(result.message_file)
    invite = invites(log, sent=True)[0]
    return invite.at, first_response(log, invite.call_id, status, sent=False).at - invite.at


def trunk_answers(result: SippResult) -> list[tuple[float, float]]:
    """Per INVITE a trunk received: (when, seconds until it sent its 200)."""
    log = read_log(result.message_file)
    return [
        (invite.at, first_response(log, invite.call_id, 200, sent=True).at - invite.at)
        for invite in invites(log, sent=False)
    ]


# ----------------------------------------------------------------- the proxy and its trunks
@dataclass
class Setup:
    proxy: ProxyProcess
    admin: tuple[str, int]

    def trunk_states(self) -> list[bool]:
        host, port = self.admin
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=5) as answer:
            status = json.load(answer)
        return [bool(trunk["up"]) for trunk in status["trunks"]]

    def wait_states(self, expected: list[bool], timeout_s: float = STATE_TIMEOUT_S) -> float:
        """Poll /status until the trunks are up/down as `expected`; how long it took."""
        start = _now()
        wait_until(lambda: self.trunk_states() == expected, timeout_s,
                   f"trunks {expected} on /status")  # fmt: skip
        return _now() - start


def _now() -> float:
    return datetime.now().timestamp()


@contextmanager
def proxy_with(
    workdir: Path, rules: Path, trunks: Sequence[Endpoint], args: Sequence[str] = ()
) -> Iterator[Setup]:
    """The proxy with these `--trunk`s in order and an admin endpoint; stopped at the end (it
    must exit 0)."""
    admin = (PRIMARY_HOST, free_port())
    proxy = ProxyProcess(
        workdir=workdir,
        rules=rules,
        listen=Endpoint(PRIMARY_HOST, free_port()),
        pbx=Endpoint(PRIMARY_HOST, free_port()),
        trunk=trunks[0],
        extra_trunks=trunks[1:],
        extra_args=["--admin", f"{admin[0]}:{admin[1]}", *args],
    )
    proxy.start()
    try:
        yield Setup(proxy, admin)
    finally:
        code = proxy.stop()
    assert code == 0, f"the proxy exited with {code}\n{proxy.log_tail()}"


def trunk_endpoints() -> tuple[Endpoint, Endpoint]:
    return Endpoint(PRIMARY_HOST, free_port()), Endpoint(SECONDARY_HOST, free_port(SECONDARY_HOST))


def trunk_side(
    name: str, scenario: str, trunk: Endpoint, status: str | None = None, calls: int = 1
) -> SippSide:
    """A SIPp trunk on `trunk` expecting CALL's number with the trunk's own host; `status`: the
    answer of trunk_uas_reject.xml; KEEPALIVE_TRUNK serves any number of calls (quit it)."""
    variables = CALL.trunk_variables(trunk.host)
    if status is not None:
        variables["status"] = status
    return SippSide(name=name, scenario=scenario, host=trunk.host, port=trunk.port,
                    variables=variables, calls=calls, timeout_s=60)  # fmt: skip


@contextmanager
def running(side: SippSide, workdir: Path) -> Iterator[SippProcess]:
    process = SippProcess(side, workdir)
    process.start()
    try:
        process.wait_bound()
        yield process
    finally:
        process.kill()


def place_call(setup: Setup, workdir: Path, scenario: str = PBX_CALL) -> SippResult:
    proxy = setup.proxy
    pbx = SippSide(name="pbx", scenario=scenario, host=proxy.pbx.host, port=proxy.pbx.port,
                   remote=proxy.listen.address(), variables=CALL.pbx_variables())  # fmt: skip
    result = run_client(pbx, workdir)
    assert_all_succeeded([result], calls=1, context=proxy.log_tail())
    return result


def finish_keepalive_trunk(process: SippProcess, invites_expected: int) -> SippResult:
    """Stop a KEEPALIVE_TRUNK SIPp: every call it had (keepalives and INVITEs) succeeded, and it
    received exactly `invites_expected` INVITEs."""
    result = process.quit()
    assert result.returncode == 0 and result.failed == 0, result.report()
    received = invites(read_log(result.message_file), sent=False)
    assert len(received) == invites_expected, f"{len(received)} INVITEs\n{result.report()}"
    return result


class SilentTrunk:
    """A UDP port that is bound (no ICMP) and never answers; it counts the INVITEs it got."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((endpoint.host, endpoint.port))
        self.sock.setblocking(False)

    def invites(self) -> int:
        count = 0
        for _ in range(10_000):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            count += data.startswith(b"INVITE ")
        return count

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------------- the flows
@dataclass(frozen=True)
class SilentPrimaryTimes:
    first_call: float  # PBX INVITE -> 200, via the secondary after the no-answer timeout
    primary_down_after: float  # proxy started -> /status shows the primary down
    second_call: float  # PBX INVITE -> 200, straight to the secondary
    second_trunk_answer: float  # the secondary's own INVITE -> 200


def silent_primary(workdir: Path, rules: Path, probes: Sequence[str]) -> SilentPrimaryTimes:
    primary, secondary = trunk_endpoints()
    silent = SilentTrunk(primary)
    try:
        with running(trunk_side("trunk2", KEEPALIVE_TRUNK, secondary, calls=1000), workdir) as t2:
            started = _now()
            with proxy_with(workdir, rules, [primary, secondary], probes) as setup:
                first = place_call(setup, workdir)
                assert silent.invites() >= 1, "the first call must have tried the primary"
                setup.wait_states([False, True])
                down_after = _now() - started
                silent.invites()
                second = place_call(setup, workdir)
                assert silent.invites() == 0, "a trunk marked down got an INVITE"
            trunk2 = finish_keepalive_trunk(t2, invites_expected=2)
    finally:
        silent.close()
    (_, answer2) = trunk_answers(trunk2)[1]
    return SilentPrimaryTimes(
        pbx_invite_to(first, 200)[1], down_after, pbx_invite_to(second, 200)[1], answer2
    )


@dataclass(frozen=True)
class FailoverTimes:
    call: float  # PBX INVITE -> 200 (via the secondary)
    failover: float  # the primary's refusal (or the PBX's INVITE, for ICMP) -> secondary's INVITE


def refusing_primary(workdir: Path, rules: Path, status: str = "503") -> FailoverTimes:
    """The primary answers `status`; the call completes on the secondary."""
    primary, secondary = trunk_endpoints()
    with proxy_with(workdir, rules, [primary, secondary]) as setup, \
            running(trunk_side("trunk1", REJECT, primary, status), workdir) as t1, \
            running(trunk_side("trunk2", ANSWER, secondary), workdir) as t2:  # fmt: skip
        pbx = place_call(setup, workdir)
        results = [t1.finish(), t2.finish()]
        assert_all_succeeded(results, calls=1, context=setup.proxy.log_tail())
    log1 = read_log(results[0].message_file)
    refused = first_response(log1, invites(log1, sent=False)[0].call_id, int(status), sent=True)
    (retried, _) = trunk_answers(results[1])[0]
    return FailoverTimes(pbx_invite_to(pbx, 200)[1], retried - refused.at)


def unreachable_primary(workdir: Path, rules: Path, no_answer_timeout_s: float) -> FailoverTimes:
    """Nothing is bound on the primary's UDP port: loopback answers ICMP port unreachable."""
    primary, secondary = trunk_endpoints()
    args = ["--no-answer-timeout", str(no_answer_timeout_s)]
    with proxy_with(workdir, rules, [primary, secondary], args) as setup, \
            running(trunk_side("trunk2", ANSWER, secondary), workdir) as t2:  # fmt: skip
        pbx = place_call(setup, workdir)
        result = t2.finish()
        assert_all_succeeded([result], calls=1, context=setup.proxy.log_tail())
        log = setup.proxy.log_file.read_text(errors="replace")
        # The failover's cause: "unreachable" (ICMP), not "no answer" (the timeout).
        assert f"{primary.address()} failed (unreachable), trying" in log, setup.proxy.log_tail()
    sent_at, took = pbx_invite_to(pbx, 200)
    (retried, _) = trunk_answers(result)[0]
    return FailoverTimes(took, retried - sent_at)


@dataclass(frozen=True)
class AllDownTimes:
    all_down_after: float  # proxy started -> /status shows both trunks down
    refused: float  # PBX INVITE -> 503
    primary_up_after: float  # the primary's SIPp started -> /status shows it up
    call_on_primary: float  # PBX INVITE -> 200, on the primary again


def all_down_then_primary_back(
    workdir: Path, rules: Path, probes: Sequence[str], successes: int
) -> AllDownTimes:
    """Both trunk ports closed (ICMP fails every probe): 503 at once; then the primary comes
    back (a SIPp answering OPTIONS and INVITE on its port) and takes the next call."""
    primary, secondary = trunk_endpoints()
    args = [*probes, "--probe-successes", str(successes)]
    started = _now()
    with proxy_with(workdir, rules, [primary, secondary], args) as setup:
        setup.wait_states([False, False])
        all_down = _now() - started
        refused = place_call(setup, workdir, PBX_REFUSED)
        with running(trunk_side("trunk1", KEEPALIVE_TRUNK, primary, calls=1000), workdir) as t1:
            back = _now()
            setup.wait_states([True, False])
            up_after = _now() - back
            call = place_call(setup, workdir)
            finish_keepalive_trunk(t1, invites_expected=1)
    return AllDownTimes(all_down, pbx_invite_to(refused, 503)[1], up_after,
                        pbx_invite_to(call, 200)[1])  # fmt: skip

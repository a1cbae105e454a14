"""`callerid-proxy run --workers 2`: calls through the shared port spread over both workers,
reloads reach every worker, a dead worker is restarted, and nothing outlives the supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from proxy.workers import REPLY_VIA_SUPERVISOR_ENV
from tests.e2e.calls import Outbound, loopback, place_outbound
from tests.e2e.conftest import EXAMPLE_RULES
from tests.e2e.ports import free_port, free_port_run, wait_until
from tests.e2e.proxy_process import ProxyProcess

WORKERS = 2
CALL = Outbound("1002", "00442079460000", "+442071234567")
USER_1001_LINE = '  "1001": "+3228880001"\n'


def _get_json(port: int, path: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _worker_status(proxy: ProxyProcess, index: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(f"{proxy.pid_file}.worker{index}.status").read_text())
    return data


class Multi:
    def __init__(self, proxy: ProxyProcess, admin: int) -> None:
        self.proxy = proxy
        self.admin = admin

    def worker_pids(self) -> list[int]:
        return [int(_worker_status(self.proxy, i)["pid"]) for i in range(WORKERS)]

    def supervisor_status(self) -> dict[str, Any]:
        return _get_json(self.admin, "/status")

    def worker_admin_status(self, index: int) -> dict[str, Any]:
        return _get_json(self.admin + 1 + index, "/status")


@contextmanager
def running_multi(tmp_path: Path, rules_file: Path, transport: str = "udp",
                  reply_via_supervisor: bool = False) -> Iterator[Multi]:
    listen = free_port_run(WORKERS)
    admin = free_port_run(WORKERS, avoid=range(listen, listen + WORKERS + 1))
    proxy = ProxyProcess(
        workdir=tmp_path,
        rules=rules_file,
        listen=loopback(listen),
        pbx=loopback(free_port(), transport),
        trunk=loopback(free_port(), transport),
        extra_args=["--workers", str(WORKERS), "--admin", f"127.0.0.1:{admin}"],
    )
    with _environment(REPLY_VIA_SUPERVISOR_ENV, "1" if reply_via_supervisor else None):
        proxy.start()
    try:
        yield Multi(proxy, admin)
    finally:
        proxy.stop()


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    before = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if before is not None:
            os.environ[name] = before


@pytest.fixture
def multi(tmp_path: Path, rules_file: Path) -> Iterator[Multi]:
    with running_multi(tmp_path, rules_file) as started:
        yield started


def test_200_calls_spread_over_both_workers_reload_and_clean_stop(
    multi: Multi, rules_file: Path, tmp_path: Path
) -> None:
    proxy = multi.proxy
    workers = multi.worker_pids()
    assert len(set(workers)) == WORKERS and proxy.pid not in workers

    place_outbound(CALL, proxy, tmp_path, calls=200, rate=50)

    # Both workers handled calls: the dispatcher sent each of them datagrams, and each
    # worker's own core decided caller IDs; together exactly one decision per call.
    supervisor = multi.supervisor_status()
    assert all(w["dispatched"] > 0 for w in supervisor["workers"]), supervisor
    decisions = [multi.worker_admin_status(i)["counters"].get("caller_id_decisions", 0)
                 for i in range(WORKERS)]
    assert all(count > 0 for count in decisions), decisions
    assert sum(decisions) == 200, decisions
    # The supervisor's /status (and /metrics) sums the workers.
    assert supervisor["counters"]["caller_id_decisions"] == 200, supervisor
    metrics = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"http://127.0.0.1:{multi.admin}/metrics", timeout=5).read().decode()
    assert 'callerid_proxy_events_total{event="caller_id_decisions"} 200.0' in metrics

    # A SIGHUP to the supervisor reaches every worker; its status reports it once all did.
    version_before = proxy.status()["active_version"]
    rules_file.write_text(EXAMPLE_RULES.replace(USER_1001_LINE, '  "1001": "+33144556677"\n'))
    status = proxy.reload()
    assert status["last_reload_ok"] is True, f"{status}\n{proxy.log_tail()}"
    assert status["active_version"] != version_before, status
    for index in range(WORKERS):
        worker = _worker_status(proxy, index)
        assert worker["reload_seq"] == 1 and worker["active_version"] == status["active_version"]
    place_outbound(Outbound("1001", "025551234", "+33144556677"), proxy, tmp_path, calls=10,
                   rate=20)

    # `callerid-proxy apply` works with the supervisor's pid file as with a single process.
    applied = subprocess.run(
        [sys.executable, "-m", "proxy", "apply", str(rules_file), "--pid-file",
         str(proxy.pid_file)], capture_output=True, text=True, timeout=30, check=False)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"applied version {status['active_version']}" in applied.stdout
    assert all(_worker_status(proxy, i)["reload_seq"] == 2 for i in range(WORKERS))

    # An invalid file is refused by the workers, and the supervisor says so.
    rules_file.write_text(EXAMPLE_RULES.replace(USER_1001_LINE, '  "1001": "+3228889999"\n'))
    refused = proxy.reload()
    assert refused["last_reload_ok"] is False, refused
    assert any(line.startswith("worker 0:") for line in refused["last_reload_errors"]), refused
    assert any(line.startswith("worker 1:") for line in refused["last_reload_errors"]), refused
    assert refused["active_version"] == status["active_version"]

    # SIGTERM stops everything: exit 0, no worker left behind.
    assert proxy.stop() == 0, proxy.log_tail()
    wait_until(lambda: not any(_alive(pid) for pid in workers), 10.0, "the workers to exit")
    assert not proxy.pid_file.exists()


def test_a_dead_worker_is_restarted_and_calls_go_on(multi: Multi, tmp_path: Path) -> None:
    proxy = multi.proxy
    first = multi.worker_pids()
    os.kill(first[0], signal.SIGKILL)

    def restarted() -> bool:
        try:
            pid = int(_worker_status(proxy, 0)["pid"])
        except (OSError, ValueError):
            return False
        return pid != first[0] and _alive(pid)

    wait_until(restarted, 30.0, "worker 0 to be restarted")
    assert f"worker 0 (pid {first[0]}) exited" in proxy.log_file.read_text()
    assert multi.supervisor_status()["counters"]["worker_restarts"] == 1
    place_outbound(CALL, proxy, tmp_path, calls=20, rate=20)
    assert multi.worker_pids()[1] == first[1]


def test_workers_stop_when_the_supervisor_is_killed(multi: Multi) -> None:
    workers = multi.worker_pids()
    os.kill(multi.proxy.pid, signal.SIGKILL)
    wait_until(lambda: not any(_alive(pid) for pid in workers), 15.0,
               "the workers to notice the supervisor is gone")


def test_tcp_calls_over_one_connection_spread_over_both_workers(
    tmp_path: Path, rules_file: Path
) -> None:
    """Over TCP the workers share the listening socket, and the PBX sends every call over the
    one connection one worker accepted: that worker sends each call whose Call-ID names the
    other worker there (proxy/stream_relay.py), which dials the trunk itself and sends its
    answers back to go out on the PBX's connection. Each worker decides its own calls' caller
    IDs, exactly one decision per call, and every call completes (SIPp checks the caller ID)."""
    with running_multi(tmp_path, rules_file, "tcp") as started:
        place_outbound(CALL, started.proxy, tmp_path, calls=40, rate=20)
        counters = [started.worker_admin_status(i)["counters"] for i in range(WORKERS)]
        decisions = [c.get("caller_id_decisions", 0) for c in counters]
        assert all(count > 0 for count in decisions), decisions
        assert sum(decisions) == 40, decisions
        holder, owner = sorted(counters, key=lambda c: c.get("stream_relayed_out", 0))[::-1]
        # Every message of the other worker's calls went there and its answers came back: at
        # least INVITE, ACK and BYE of each of its calls, and its 100, 180, 200s.
        relayed = holder.get("stream_relayed_out", 0)
        assert relayed >= 3 * decisions[counters.index(owner)], counters
        assert owner.get("stream_relayed_in", 0) == relayed, counters
        assert owner.get("stream_replies_relayed", 0) >= relayed, counters
        assert holder.get("stream_replies_sent", 0) == owner.get("stream_replies_relayed"), counters
        assert not any(c.get(name, 0) for c in counters for name in (
            "stream_reply_drops", "stream_misdirected", "stream_kept_unrelayable")), counters
        supervisor = started.supervisor_status()["counters"]
        assert supervisor["dispatcher_stream_relayed"] == relayed + holder["stream_replies_sent"]
        assert started.proxy.stop() == 0


def _options(call_id: str, pbx_port: int, target: str) -> bytes:
    return (
        f"OPTIONS sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{pbx_port};branch=z9hG4bK-{call_id};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1002@127.0.0.1>;tag=f-{call_id}\r\n"
        f"To: <sip:{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("via_supervisor", [False, True], ids=["from-workers", "via-supervisor"])
def test_responses_leave_from_the_port_the_request_came_in_on(
    tmp_path: Path, rules_file: Path, via_supervisor: bool
) -> None:
    """RFC 3581 section 4: the PBX sends to the shared port and gets the response (the
    trunk's 200, relayed) from the shared port, whichever worker took the request; the trunk
    sees the request come from that worker's own port, which its Via names. Both ways: the
    workers' own sockets on the shared port, and (turned off) through the dispatcher."""
    with running_multi(tmp_path, rules_file, reply_via_supervisor=via_supervisor) as multi:
        _check_reply_ports(multi)
        status = multi.supervisor_status()
        assert status["replies_from_workers"] is not via_supervisor
        replies = status["counters"]["dispatcher_replies"]
        assert replies >= 12 if via_supervisor else replies == 0, status


def _receive_call(sock: socket.socket, call_id: bytes) -> tuple[bytes, tuple[str, int]]:
    """The next datagram of that call; a loaded machine may retransmit an earlier one."""
    for _ in range(20):
        data, address = sock.recvfrom(65535)
        if f"Call-ID: {call_id.decode()}\r\n".encode() in data:
            return data, (str(address[0]), int(address[1]))
    raise AssertionError(f"no message of {call_id!r}")


def _check_reply_ports(multi: Multi) -> None:
    proxy = multi.proxy
    shared = (proxy.listen.host, proxy.listen.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
        pbx.bind((proxy.pbx.host, proxy.pbx.port))
        trunk.bind((proxy.trunk.host, proxy.trunk.port))
        pbx.settimeout(5.0)
        trunk.settimeout(5.0)
        own_ports = set()
        for n in range(12):  # Call-IDs spread over both workers
            call_id = f"options-{n}".encode()
            pbx.sendto(_options(f"options-{n}", proxy.pbx.port, "+3228880000@127.0.0.1"),
                       shared)
            request, request_from = _receive_call(trunk, call_id)
            own_ports.add(request_from[1])
            top_via = request.split(b"\r\n")[1]
            assert f"127.0.0.1:{request_from[1]};".encode() in top_via, top_via
            head, _, _ = request.partition(b"\r\n\r\n")
            vias = [line for line in head.split(b"\r\n") if line.lower().startswith(b"via:")]
            response = b"\r\n".join(
                [b"SIP/2.0 200 OK", *vias,
                 *(line for line in head.split(b"\r\n")[1:]
                   if line.split(b":")[0].lower() in (b"from", b"to", b"call-id", b"cseq")),
                 b"Content-Length: 0", b"", b""])
            trunk.sendto(response, request_from)
            answer, answer_from = _receive_call(pbx, call_id)
            assert answer.startswith(b"SIP/2.0 200"), answer
            assert answer_from == shared, answer_from
    assert own_ports == {proxy.listen.port + 1, proxy.listen.port + 2}, own_ports


def test_a_taken_worker_port_fails_the_start_cleanly(tmp_path: Path, rules_file: Path) -> None:
    """Worker 1's port is taken: the supervisor exits 1 saying so, stops worker 0, and leaves
    the pid file of whoever else uses it alone."""
    listen = free_port_run(WORKERS)
    pid_file = tmp_path / "other.pid"
    pid_file.write_text("12345\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", listen + 2))
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "run", "--rules", str(rules_file),
             "--listen", f"127.0.0.1:{listen}", "--pbx", f"127.0.0.1:{free_port()}",
             "--trunk", f"127.0.0.1:{free_port()}", "--workers", str(WORKERS),
             "--pid-file", str(pid_file), "--secret", "s"],
            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert "worker 1 cannot listen" in result.stderr and "worker 1 exited with 1" in result.stderr
    assert pid_file.read_text() == "12345\n"
    assert not Path(f"{pid_file}.worker0").exists()

"""The `--workers` supervisor's pure parts: worker command lines, worker addresses, ports,
and how the workers' reload outcomes combine into the one status `apply` reads."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.control import ProxyStatus
from proxy.reply_port import bind_sender, bind_steered
from proxy.run_cli import build_settings
from proxy.sip.addresses import Target
from proxy.sip.policy import PBX_SIDE, TRUNK_SIDE
from proxy.worker_process import WorkerLogTag, WorkerSpec, worker_settings
from proxy.workers import SupervisorError, _combine, check_ports, worker_arguments
from tests.certs import TestCa

BASE: dict[str, Any] = {
    "rules": Path("rules.yaml"),
    "pbx": "127.0.0.1:5070",
    "trunk": ["127.0.0.1:5080", "tcp:127.0.0.1:5081"],
    "secret": "s3cret",
    "listen": ["127.0.0.1:5060"],
}


def test_worker_arguments() -> None:
    settings = {**BASE, "workers": 2, "trusted": ["10.0.0.0/8", "192.0.2.0/24"],
                "admin": "127.0.0.1:9060", "log_level": "debug"}
    arguments = worker_arguments(settings, 1, (("127.0.0.1", 5060), ("::1", 5060)),
                                 ("127.0.0.1", 9060), Path("/run/p.pid"))
    pairs = list(zip(arguments[::2], arguments[1::2], strict=True))
    assert ("--listen", "127.0.0.1:5060") in pairs and ("--listen", "[::1]:5060") in pairs
    assert ("--trunk", "127.0.0.1:5080") in pairs and ("--trunk", "tcp:127.0.0.1:5081") in pairs
    assert ("--trusted", "10.0.0.0/8") in pairs and ("--trusted", "192.0.2.0/24") in pairs
    assert ("--pid-file", "/run/p.pid.worker1") in pairs
    assert ("--admin", "127.0.0.1:9062") in pairs
    assert ("--log-level", "debug") in pairs
    assert "--workers" not in arguments  # the children are workers
    assert "--secret" not in arguments and "s3cret" not in arguments  # through the environment


def test_worker_arguments_without_admin() -> None:
    arguments = worker_arguments({**BASE, "admin": "127.0.0.1:9060"}, 0,
                                 (("127.0.0.1", 5060),), None, Path("p.pid"))
    assert "--admin" not in arguments


def test_worker_listens_on_its_own_port_and_advertises_it_first() -> None:
    config, server = worker_settings(1, BASE, build_settings)
    assert server.listen == (("127.0.0.1", 5062),)
    assert config.facing(PBX_SIDE, "udp", "127.0.0.1") == Target("udp", "127.0.0.1", 5062)
    assert config.facing(TRUNK_SIDE, "tcp", "127.0.0.1") == Target("tcp", "127.0.0.1", 5062)
    assert Target("udp", "127.0.0.1", 5060) in config.advertised  # the shared port is ours too
    assert config.secret == b"s3cret"


def test_worker_on_a_wildcard_shows_each_side_its_address_with_its_own_port() -> None:
    settings = {**BASE, "listen": ["0.0.0.0:5060"], "advertise_pbx": "10.0.0.1",
                "advertise_trunk": "203.0.113.5"}
    config, server = worker_settings(0, settings, build_settings)
    assert server.listen == (("0.0.0.0", 5061),)
    assert config.facing(PBX_SIDE, "udp", "10.0.0.9") == Target("udp", "10.0.0.1", 5061)
    assert config.facing(TRUNK_SIDE, "udp", "198.51.100.1") == Target("udp", "203.0.113.5", 5061)
    assert Target("udp", "203.0.113.5", 5060) in config.advertised


def test_spec_round_trip() -> None:
    spec = WorkerSpec(index=3, inbox_fd=9, lifeline_fd=4, tcp_fds=(6, 7))
    assert WorkerSpec.from_json(spec.to_json()) == spec


def test_ports_beyond_the_range_are_refused() -> None:
    check_ports((("127.0.0.1", 65533),), None, 2)
    with pytest.raises(SupervisorError):
        check_ports((("127.0.0.1", 65534),), None, 2)
    with pytest.raises(SupervisorError):
        check_ports((("127.0.0.1", 5060),), ("127.0.0.1", 65535), 2)


def _status(seq: int, ok: bool = True, version: str = "v2",
            errors: tuple[str, ...] = ()) -> ProxyStatus:
    return ProxyStatus(pid=1, active_version=version, rules_path="r.yaml", reload_seq=seq,
                       last_reload_ok=ok, last_reload_version=version if ok else None,
                       last_reload_errors=errors, updated_at=0.0)


def test_reload_applied_when_every_worker_confirmed_the_same_version() -> None:
    outcome = _combine({0: 0, 1: 0}, {0: _status(1), 1: _status(1)})
    assert (outcome.ok, outcome.version, outcome.errors) == (True, "v2", ())


def test_reload_refused_by_one_worker() -> None:
    refused = _status(1, ok=False, version="v1", errors=("r.yaml:3: bad number",))
    outcome = _combine({0: 0, 1: 0}, {0: _status(1), 1: refused})
    assert not outcome.ok
    assert outcome.errors == ("worker 1: r.yaml:3: bad number",)


def test_reload_not_confirmed_by_one_worker() -> None:
    outcome = _combine({0: 0, 1: 0}, {0: _status(1)})
    assert not outcome.ok
    assert outcome.errors[0].startswith("worker 1 did not confirm")


def test_reload_with_workers_on_different_versions() -> None:
    outcome = _combine({0: 0, 1: 0}, {0: _status(1, version="v2"), 1: _status(1, version="v3")})
    assert not outcome.ok and "different versions" in outcome.errors[0]


def test_reload_with_no_worker_running_is_not_applied() -> None:
    outcome = _combine({}, {})
    assert not outcome.ok and outcome.errors == ("no worker is running",)


def test_worker_log_lines_name_the_worker() -> None:
    record = logging.LogRecord("callerid_proxy.server", logging.INFO, __file__, 1, "x", None,
                               None)
    tag = WorkerLogTag(1)
    assert tag.filter(record) and tag.filter(record)  # a second handler does not tag it twice
    assert record.name == "callerid_proxy.server[w1]"


def _drain(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(100)
            count += 1
    return count


def test_the_shared_socket_receives_everything_and_workers_send_from_its_port() -> None:
    """The steering program sends every datagram, whatever its source, to the supervisor's
    socket, never to a worker's socket in the same SO_REUSEPORT group; a worker's socket
    sends from the shared port; a second instance still cannot bind the address."""
    shared, steered = bind_steered("127.0.0.1", 0)
    port = shared.getsockname()[1]
    senders = [bind_sender("127.0.0.1", port) for _ in range(2)]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5.0)
    try:
        assert steered
        for n in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # 50 source ports
                client.sendto(b"%d" % n, ("127.0.0.1", port))
        deadline = time.monotonic() + 5.0
        received = 0
        while received < 50 and time.monotonic() < deadline:
            received += _drain(shared)
            time.sleep(0.01)
        assert received == 50
        assert sum(_drain(sender) for sender in senders) == 0
        senders[1].sendto(b"reply", peer.getsockname())
        assert peer.recvfrom(100) == (b"reply", ("127.0.0.1", port))
        with pytest.raises(OSError):
            bind_steered("127.0.0.1", port)
    finally:
        for sock in (shared, peer, *senders):
            sock.close()


def test_without_steering_the_shared_socket_is_a_plain_one() -> None:
    shared, steered = bind_steered("127.0.0.1", 0, steer=False)
    with shared:
        assert not steered
        assert not shared.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_run_refuses_a_bad_worker_count(value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--rules", str(tmp_path / "r.yaml"),
         "--pbx", "127.0.0.1:5070", "--trunk", "127.0.0.1:5080", "--workers", value],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--workers" in result.stderr


def test_run_refuses_workers_with_a_tls_listener(tmp_path: Path) -> None:
    """The workers never listened on a tls: address, and worker 0's own port (5061 here) is
    where TLS usually is: a TLS client got plain TCP. Refused at start instead."""
    issued = TestCa(tmp_path).issue("proxy", ["localhost"], ["127.0.0.1"])
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--rules", str(tmp_path / "r.yaml"),
         "--pbx", "127.0.0.1:5070", "--trunk", "127.0.0.1:5080", "--workers", "2",
         "--listen", "127.0.0.1:5060", "--listen", "tls:127.0.0.1:5061",
         "--tls-cert", str(issued.cert), "--tls-key", str(issued.key)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "--workers: listening on tls: is not supported" in result.stderr

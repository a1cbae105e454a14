"""The real proxy on loopback for the hostile-input tests (and bench/hostile.py at full size).

The PBX is 127.0.0.1, the trunk 127.0.0.5; an attacker binds 127.0.0.9 (or any other
127.0.0.x), an untrusted source. Everything is bounded: every wait has a timeout.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.ports import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "example.yaml"
PBX_HOST, TRUNK_HOST, ATTACKER = "127.0.0.1", "127.0.0.5", "127.0.0.9"
TOKEN = "hostile-test-token"
WAIT_S = 10.0


class UdpPeer:
    """The PBX or the trunk: one UDP socket bound on its loopback address."""

    def __init__(self, host: str, proxy: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.proxy = proxy

    def send(self, data: bytes) -> None:
        with suppress(BlockingIOError, ConnectionRefusedError):
            self.sock.sendto(data, self.proxy)

    def receive(self, timeout: float = WAIT_S) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(70000)
        finally:
            self.sock.setblocking(False)

    def drain(self) -> list[bytes]:
        got: list[bytes] = []
        while len(got) < 100_000:
            try:
                got.append(self.sock.recv(70000))
            except (BlockingIOError, ConnectionRefusedError):
                break
        return got

    def close(self) -> None:
        self.sock.close()


@dataclass
class RunningProxy:
    process: subprocess.Popen[bytes]
    port: int
    admin: tuple[str, int]
    pbx: UdpPeer
    trunk: UdpPeer
    log: Path
    pid_file: Path
    rules: Path

    def alive(self) -> None:
        assert self.process.poll() is None, f"the proxy died; log:\n{self.log_tail()}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_kb(self) -> int:
        return proc_rss_kb(self.process.pid)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def http(
        self, method: str, path: str, headers: dict[str, str] | None = None,
        *, timeout: float = WAIT_S,
    ) -> tuple[int, bytes]:
        """One admin request; http.client sends `Host: 127.0.0.1:PORT` unless `headers` has one."""
        connection = http.client.HTTPConnection(*self.admin, timeout=timeout)
        try:
            connection.putrequest(method, path, skip_host="Host" in (headers or {}))
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def status(self) -> dict[str, Any]:
        code, body = self.http("GET", "/status")
        assert code == 200, (code, body)
        data = json.loads(body)
        assert isinstance(data, dict)
        return data

    def counters(self) -> dict[str, int]:
        status = self.status()
        return {**status["counters"], **status["transport"]}


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def running_proxy(
    tmp: Path,
    extra: Sequence[str] = (),
    *,
    log_level: str = "info",
    preexec: Callable[[], None] | None = None,
    rules: Path = RULES,
    env: dict[str, str] | None = None,
) -> Iterator[RunningProxy]:
    """`callerid-proxy run` with an admin endpoint (token TOKEN) and `extra` flags."""
    port, admin_port = free_port(), free_port()
    pbx, trunk = UdpPeer(PBX_HOST, (PBX_HOST, port)), UdpPeer(TRUNK_HOST, (PBX_HOST, port))
    pid_file = tmp / f"hostile-{port}.pid"
    log = tmp / f"hostile-{port}.log"
    rules_copy = tmp / f"rules-{port}.yaml"
    rules_copy.write_bytes(rules.read_bytes())
    command = [
        sys.executable, "-m", "proxy", "run", "--rules", str(rules_copy),
        "--listen", f"{PBX_HOST}:{port}", "--pbx", f"{PBX_HOST}:{pbx.port}",
        "--trunk", f"{TRUNK_HOST}:{trunk.port}", "--pid-file", str(pid_file), "--secret", "h",
        "--log-level", log_level, "--admin", f"{PBX_HOST}:{admin_port}", "--admin-token", TOKEN,
        *extra,
    ]  # fmt: skip
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, preexec_fn=preexec, env=env,
        )  # fmt: skip
    proxy = RunningProxy(process, port, (PBX_HOST, admin_port), pbx, trunk, log, pid_file,
                         rules_copy)
    status_file = pid_file.with_name(pid_file.name + ".status")
    try:

        def ready() -> bool:
            proxy.alive()
            return status_file.exists()

        wait_until(ready, 15.0, "the proxy's status file")
        yield proxy
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        pbx.close()
        trunk.close()


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)


def tracebacks(log_text: str) -> list[str]:
    """The log records that carry a traceback or an internal error."""
    found: list[str] = []
    starts = [match.start() for match in _LOG_RECORD.finditer(log_text)] + [len(log_text)]
    for start, end in itertools.pairwise(starts):
        record = log_text[start:end]
        if "Traceback" in record or "internal error" in record:
            found.append(record)
    if "Traceback" in log_text[: starts[0]]:
        found.append(log_text[: starts[0]])
    return found


def options(
    call_id: str, *, via_host: str = ATTACKER, transport: str = "TCP", max_forwards: int = 70
) -> bytes:
    return (
        f"OPTIONS sip:probe@{PBX_HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}:5999;branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <sip:scan@{via_host}>;tag=a\r\nTo: <sip:probe@{PBX_HOST}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def untrusted_invite(index: int, *, via_host: str = ATTACKER, transport: str = "UDP") -> bytes:
    return (
        f"INVITE sip:00442079460000@{PBX_HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}:5999;branch=z9hG4bK-flood-{index}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:100@{via_host}>;tag=f{index}\r\nTo: <sip:00442079460000@{PBX_HOST}>\r\n"
        f"Call-ID: flood-{index}@{via_host}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def tcp_from(host: str, port: int, *, rcvbuf: int | None = None, timeout: float = 5.0) -> (
    socket.socket
):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((host, 0))
    sock.settimeout(timeout)
    sock.connect((PBX_HOST, port))
    return sock


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the proxy closes `sock` (EOF or RST) within `timeout`, reading what comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    wait_until(condition, timeout, what)

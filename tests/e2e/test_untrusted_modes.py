"""The real process, `--untrusted reply|drop` (issue 7): an outsider's UDP request gets a 403 no
larger than it (reply) or nothing (drop); over TCP the connection is closed after the refusal;
a 64 KB Via flood gets nothing; calls from the PBX go on."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.ports import free_port, wait_until
from tests.e2e.test_untrusted import call_id_of, invite_from_the_pbx

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "example.yaml"
HOST, OUTSIDER = "127.0.0.1", "127.0.0.2"
WAIT_S = 5.0


@dataclass
class Running:
    port: int
    trunk: socket.socket
    pbx: socket.socket
    log: Path

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@contextmanager
def proxy(tmp: Path, *options: str) -> Iterator[Running]:
    port, pbx_port, trunk_port = free_port(), free_port(), free_port()
    pid_file, log = tmp / f"u-{port}.pid", tmp / f"u-{port}.log"
    executable = shutil.which("callerid-proxy")
    command = [executable] if executable else [sys.executable, "-m", "proxy"]
    command += [
        "run", "--rules", str(RULES), "--listen", f"{HOST}:{port}", "--pbx", f"{HOST}:{pbx_port}",
        "--trunk", f"{HOST}:{trunk_port}", "--pid-file", str(pid_file), "--secret", "u",
        "--log-level", "warning", *options,
    ]  # fmt: skip
    with (
        log.open("wb") as log_file,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx,
    ):
        trunk.bind((HOST, trunk_port))
        pbx.bind((HOST, pbx_port))
        trunk.settimeout(WAIT_S)
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            status = Path(f"{pid_file}.status")
            wait_until(lambda: process.poll() is None and status.exists(), 15.0, "status file")
            yield Running(port, trunk, pbx, log)
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0, log.read_text(errors="replace")


def outsider_invite(port: int, call_id: str, vias: int = 1) -> bytes:
    lines = [
        f"INVITE sip:0044207946@{HOST}:{port} SIP/2.0",
        *[f"Via: SIP/2.0/UDP {OUTSIDER}:5999;branch=z9hG4bK-out-{n}" for n in range(vias)],
        "Max-Forwards: 70",
        f"From: <sip:1001@{OUTSIDER}>;tag=out",
        f"To: <sip:0044207946@{HOST}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def barrier(running: Running, name: str) -> None:
    """A call from the PBX sent after the outsider's datagram: it reaches the trunk first, so
    anything the outsider's datagram caused was already sent (datagrams are handled in order)."""
    call_id = f"barrier-{name}@{HOST}"
    pbx_port = running.pbx.getsockname()[1]
    running.pbx.sendto(invite_from_the_pbx(call_id, pbx_port, running.port), (HOST, running.port))
    first, _ = running.trunk.recvfrom(65536)
    assert call_id_of(first) == call_id, running.log_tail()


def udp_answers(outsider: socket.socket) -> list[bytes]:
    outsider.settimeout(0.3)
    answers: list[bytes] = []
    try:
        while True:
            answers.append(outsider.recv(65536))
    except TimeoutError:
        return answers


@pytest.mark.parametrize("mode", ["reply", "drop"])
def test_an_outsider_over_udp(tmp_path: Path, mode: str) -> None:
    with (
        proxy(tmp_path, "--untrusted", mode) as running,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outsider,
    ):
        outsider.bind((OUTSIDER, 0))
        request = outsider_invite(running.port, "outsider@x")
        outsider.sendto(request, (HOST, running.port))
        flood = outsider_invite(running.port, "flood@x", vias=1100)
        assert 60_000 < len(flood) < 65_000
        outsider.sendto(flood, (HOST, running.port))
        barrier(running, mode)
        answers = udp_answers(outsider)
    if mode == "drop":
        assert answers == []
    else:
        (answer,) = answers  # none to the flood: its From/To/Call-ID lie beyond the glance
        assert answer.startswith(b"SIP/2.0 403 Forbidden\r\n")
        assert call_id_of(answer) == "outsider@x"
        assert len(answer) <= len(request)


@pytest.mark.parametrize("mode", ["reply", "drop"])
def test_an_outsider_over_tcp_is_disconnected_after_one_refusal(tmp_path: Path, mode: str) -> None:
    with (
        proxy(tmp_path, "--untrusted", mode) as running,
        socket.create_connection((HOST, running.port), WAIT_S, (OUTSIDER, 0)) as outsider,
    ):
        outsider.sendall(outsider_invite(running.port, "tcp-outsider@x") * 3)
        received = b""
        while chunk := outsider.recv(65536):  # until the proxy closes the connection
            received += chunk
    if mode == "drop":
        assert received == b""
    else:
        assert received.startswith(b"SIP/2.0 403 Forbidden\r\n")
        assert received.count(b"SIP/2.0 ") == 1  # one answer, then the connection is closed

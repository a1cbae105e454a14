"""The real process probes its trunks with OPTIONS (`--probe-interval`) and sends new calls past a
trunk that answers them 503 (down), straight to the next one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file
from tests.proxy.sip.support import invite, response_to

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def test_a_trunk_refusing_keepalives_is_skipped(tmp_path: Path) -> None:
    port = free_port()
    pbx, dead, good = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    for sock in (pbx, dead, good):
        sock.bind((HOST, 0))
        sock.settimeout(5)
    dead_port = dead.getsockname()[1]
    pid_file = tmp_path / "p.pid"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", "rules/example.yaml",
         "--listen", f"{HOST}:{port}", "--pbx", f"{HOST}:{pbx.getsockname()[1]}",
         "--trunk", f"{HOST}:{dead.getsockname()[1]}",
         "--trunk", f"{HOST}:{good.getsockname()[1]}", "--secret", "s",
         "--pid-file", str(pid_file), "--probe-interval", "0.2", "--probe-failures", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_status_file(proxy, pid_file)
        probe, _ = dead.recvfrom(65536)
        assert probe.startswith(b"OPTIONS sip:")
        dead.sendto(response_to(probe, 503, "Service Unavailable"), (HOST, port))
        probe, _ = good.recvfrom(65536)
        good.sendto(response_to(probe, 200, "OK"), (HOST, port))
        time.sleep(0.1)  # the 503 is handled: the dead trunk is down
        pbx.sendto(invite(), (HOST, port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data, _ = good.recvfrom(65536)
            if data.startswith(b"INVITE "):
                break
            good.sendto(response_to(data, 200, "OK"), (HOST, port))  # more keepalives
        assert data.startswith(b"INVITE ") and b";tr=1;" in data
    finally:
        proxy.terminate()
        _, stderr = proxy.communicate(timeout=10)
        for sock in (pbx, dead, good):
            sock.close()
    assert proxy.returncode == 0
    assert f"trunk {HOST}:{dead_port} is down (keepalives unanswered)" in stderr
    assert "Traceback" not in stderr

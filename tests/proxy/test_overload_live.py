"""The real process sheds new INVITEs over `--max-transactions` with 503 + Retry-After, logs and
counts it, and still relays the answers of the calls it admitted."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file
from tests.proxy.sip.support import invite, response_to

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def test_over_the_bound_new_invites_get_503_at_once(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trunk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (pbx, trunk):
        sock.bind((HOST, 0))
        sock.settimeout(5)
    pid_file = tmp_path / "p.pid"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", "rules/example.yaml",
         "--listen", f"{HOST}:{port}", "--pbx", f"{HOST}:{pbx.getsockname()[1]}",
         "--trunk", f"{HOST}:{trunk.getsockname()[1]}", "--secret", "s",
         "--pid-file", str(pid_file), "--max-transactions", "2", "--admin", f"{HOST}:{admin}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_status_file(proxy, pid_file)
        forwarded = []
        for n in range(2):
            pbx.sendto(invite(branch=f"z9hG4bK-a{n}", call_id=f"a{n}@pbx"), (HOST, port))
            forwarded.append(trunk.recvfrom(65536)[0])
            assert pbx.recvfrom(65536)[0].startswith(b"SIP/2.0 100 Trying")
        pbx.sendto(invite(branch="z9hG4bK-shed", call_id="shed@pbx"), (HOST, port))
        shed = pbx.recvfrom(65536)[0].decode()
        assert shed.startswith("SIP/2.0 503 Service Unavailable\r\n")
        assert "\r\nRetry-After: 5\r\n" in shed and "Call-ID: shed@pbx" in shed
        trunk.sendto(response_to(forwarded[0], 200, "OK"), (HOST, port))
        assert pbx.recvfrom(65536)[0].startswith(b"SIP/2.0 200 OK")  # admitted calls flow
        with socket.create_connection((HOST, admin), timeout=5) as http:
            http.sendall(f"GET /metrics HTTP/1.0\r\nHost: {HOST}:{admin}\r\n\r\n".encode())
            metrics = b""
            while chunk := http.recv(65536):
                metrics += chunk
        assert b'callerid_proxy_shed_total{cause="transactions"} 1.0' in metrics
        assert b'callerid_proxy_events_total{event="shed"} 1.0' in metrics
    finally:
        proxy.terminate()
        _, stderr = proxy.communicate(timeout=10)
        pbx.close()
        trunk.close()
    assert proxy.returncode == 0
    assert "call-id=a0@pbx user=1001" in stderr  # the audit line, from the glue

"""A proxy on two addresses shows, and sends from, the address of each side (real process)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file
from tests.proxy.sip.support import invite

ROOT = Path(__file__).resolve().parents[2]
PBX_SIDE, TRUNK_SIDE, TRUNK_HOST = "127.0.0.1", "127.0.0.4", "127.0.0.5"


def test_the_trunk_gets_the_call_from_and_through_the_trunk_facing_address(
    tmp_path: Path,
) -> None:
    port = free_port()
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trunk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind((PBX_SIDE, 0))
    trunk.bind((TRUNK_HOST, 0))
    pbx.settimeout(5)
    trunk.settimeout(5)
    pid_file = tmp_path / "p.pid"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", "rules/example.yaml",
         "--listen", f"{PBX_SIDE}:{port}", "--listen", f"{TRUNK_SIDE}:{port}",
         "--advertise-pbx", PBX_SIDE, "--advertise-trunk", TRUNK_SIDE,
         "--pbx", f"{PBX_SIDE}:{pbx.getsockname()[1]}",
         "--trunk", f"{TRUNK_HOST}:{trunk.getsockname()[1]}",
         "--secret", "s", "--pid-file", str(pid_file)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_status_file(proxy, pid_file)
        pbx.sendto(invite(), (PBX_SIDE, port))
        data, sender = trunk.recvfrom(65536)
        assert sender == (TRUNK_SIDE, port)  # sent from the trunk-facing socket
        text = data.decode()
        assert f"Via: SIP/2.0/UDP {TRUNK_SIDE}:{port};branch=z9hG4bK" in text
        assert f"Record-Route: <sip:{TRUNK_SIDE}:{port};lr;cid=" in text
        assert f"Record-Route: <sip:{PBX_SIDE}:{port};lr>\r\n" in text
        trying, sender = pbx.recvfrom(65536)
        assert trying.startswith(b"SIP/2.0 100 Trying") and sender == (PBX_SIDE, port)
    finally:
        proxy.terminate()
        proxy.communicate(timeout=10)
        pbx.close()
        trunk.close()
    assert proxy.returncode == 0

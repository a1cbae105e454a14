"""The README's quick start stays true: the example proxy, then scripts/demo_call.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file

ROOT = Path(__file__).resolve().parents[2]


def test_demo_call_through_the_example_proxy(tmp_path: Path) -> None:
    proxy_port, pbx_port, trunk_port = free_port(), free_port(), free_port()
    pid_file = tmp_path / "proxy.pid"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", "rules/example.yaml",
         "--listen", f"127.0.0.1:{proxy_port}", "--pbx", f"127.0.0.1:{pbx_port}",
         "--trunk", f"127.0.0.1:{trunk_port}", "--pid-file", str(pid_file)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_status_file(proxy, pid_file)
        env = {**os.environ, "PROXY_PORT": str(proxy_port), "PBX_PORT": str(pbx_port),
               "TRUNK_PORT": str(trunk_port), "CONTROL_PORT": str(free_port())}
        demo = subprocess.run(["bash", "scripts/demo_call.sh"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    finally:
        proxy.terminate()
        _, log = proxy.communicate(timeout=10)
    assert demo.returncode == 0, demo.stderr + log
    assert 'From: "ACME UK" <sip:+442071234567@127.0.0.1>;tag=' in demo.stdout
    assert 'P-Asserted-Identity: "ACME UK" <sip:+442071234567@127.0.0.1>' in demo.stdout
    assert "user=1002 destination=00442079460000 shown=+442071234567" in log
    assert proxy.returncode == 0

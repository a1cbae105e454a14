"""A crash in native code leaves a Python traceback in the proxy's log (faulthandler, enabled by
`callerid-proxy run`), not a bare "exited with -11": the benchmark once saw the proxy die with
SIGSEGV on SIGTERM, with nothing to go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file

REPO = Path(__file__).resolve().parents[2]


def test_a_segmentation_fault_writes_every_threads_stack(tmp_path: Path) -> None:
    pid_file = tmp_path / "crash.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", str(REPO / "rules" / "example.yaml"),
         "--listen", f"127.0.0.1:{free_port()}", "--pbx", "127.0.0.1:5070",
         "--trunk", "127.0.0.1:5080", "--secret", "s", "--pid-file", str(pid_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        wait_for_status_file(process, pid_file)
        os.kill(process.pid, signal.SIGSEGV)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in stderr
    assert 'File "' in stderr  # a stack, with the module it was in

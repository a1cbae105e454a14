"""`callerid-proxy run` as a subprocess: start, wait ready, SIGHUP reload, SIGTERM stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.ports import free_port, wait_until

READY_TIMEOUT_S = 15.0


def wait_for_status_file(process: subprocess.Popen[str], pid_file: Path) -> None:
    """Bounded wait until a `callerid-proxy run` started by a test has written its status file
    (it does once bound); a proxy that exits first fails the test with its stderr."""

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the proxy exited with {process.returncode}: "
                                 f"{process.communicate()[1]}")
        return Path(f"{pid_file}.status").exists()

    wait_until(ready, READY_TIMEOUT_S, f"{pid_file}.status")


@contextmanager
def proxy_with_admin(rules: Path, pid_file: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A bare `callerid-proxy run` on free loopback ports with an admin endpoint: yields the
    process and the admin HOST:PORT once it is ready, and stops it afterwards."""
    admin = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", str(rules),
         "--listen", f"127.0.0.1:{free_port()}", "--pbx", "127.0.0.1:5070",
         "--trunk", "127.0.0.1:5080", "--secret", "s", "--pid-file", str(pid_file),
         "--admin", admin],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_status_file(process, pid_file)
        yield process, admin
    finally:
        process.terminate()
        process.communicate(timeout=10)
RELOAD_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
DEFAULT_SECRET = "e2e-test-secret"


@dataclass(frozen=True)
class Endpoint:
    """A SIP address as the proxy's --pbx / --trunk options take it."""

    host: str
    port: int
    transport: str = "udp"

    def option(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"

    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ProxyProcess:
    """One running `callerid-proxy run`; its stdout and stderr go to a log file under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        rules: Path,
        listen: Endpoint,
        pbx: Endpoint,
        trunk: Endpoint,
        trusted: Sequence[str] = (),
        secret: str = DEFAULT_SECRET,
        name: str = "proxy",
        extra_trunks: Sequence[Endpoint] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        """`name` prefixes the pid and log files, so a proxy started again on the same ports
        (a restart) keeps its own files. `extra_trunks` are further `--trunk`s after `trunk`,
        tried in order when the one before fails a call (failover). `extra_args` are appended
        to the command line (e.g. `--workers 2`)."""
        self.listen = listen
        self.pbx = pbx
        self.trunk = trunk
        self.extra_trunks = tuple(extra_trunks)
        self.pid_file = workdir / f"{name}-{listen.port}.pid"
        self.status_file = Path(f"{self.pid_file}.status")
        self.log_file = workdir / f"{name}-{listen.port}.log"
        self._command = [
            sys.executable, "-m", "proxy", "run",
            "--rules", str(rules),
            "--listen", listen.address(),
            "--pbx", pbx.option(),
            "--trunk", trunk.option(),
            "--pid-file", str(self.pid_file),
            "--secret", secret,
            "--log-level", "info",
        ]  # fmt: skip
        for extra in self.extra_trunks:
            self._command += ["--trunk", extra.option()]
        for cidr in trusted:
            self._command += ["--trusted", cidr]
        self._command += list(extra_args)  # e.g. a TLS listen address, --workers
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the proxy and wait (bounded) for its status file, written once it has bound."""
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            self._check_alive()
            status = self._read_status()
            return status is not None and status.get("pid") == self.pid

        wait_until(ready, READY_TIMEOUT_S, f"the proxy status file {self.status_file}")

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def status(self) -> dict[str, Any]:
        status = self._read_status()
        assert status is not None, f"no readable status file\n{self.log_tail()}"
        return status

    def reload(self) -> dict[str, Any]:
        """SIGHUP the proxy and wait (bounded) until the status shows that reload attempt."""
        before = int(self.status()["reload_seq"])
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            self._check_alive()
            status = self._read_status()
            return status is not None and int(status.get("reload_seq", before)) > before

        wait_until(reloaded, RELOAD_TIMEOUT_S, "reload_seq to increase after SIGHUP")
        return self.status()

    def stop(self) -> int | None:
        """SIGTERM the proxy; its exit code, or None if it had to be killed."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT_S)
                return None
        return self._process.returncode

    def wait_for_log(self, text: str, timeout_s: float = 10.0) -> None:
        """Wait for `text` in the log: audit lines are written in batches on the proxy's 50 ms
        loop tick (proxy/logs.py), later still when the machine is busy."""
        wait_until(lambda: text in self.log_file.read_text(errors="replace"), timeout_s,
                   f"{text!r} in the proxy log\n{self.log_tail()}")  # fmt: skip

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "--- proxy log (tail):\n" + "\n".join(text.splitlines()[-lines:])

    def _check_alive(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(
                f"the proxy exited with {self._process.returncode}\n"
                f"command: {' '.join(self._command)}\n{self.log_tail()}"
            )

    def _read_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

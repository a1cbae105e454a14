"""The systems the benchmark puts between the PBX and the trunk SIPp: callerid-proxy (the code
on PYTHONPATH, or its copy installed for another interpreter), Kamailio with
bench/kamailio/kamailio.cfg, or nothing (the baseline).

Each is started fresh for every run, on free loopback ports, so its peak RSS and its GC
figures belong to that run alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.ports import free_port, is_bound, wait_until

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RULES = BENCH / "rules.yaml"
KAMAILIO_CFG = BENCH / "kamailio" / "kamailio.cfg"
KAMAILIO_CANDIDATES = ("kamailio", "/usr/sbin/kamailio", "/usr/local/sbin/kamailio")
HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
SECRET = "bench-secret"


def find_kamailio() -> str | None:
    for candidate in KAMAILIO_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


def proxy_supports_workers() -> bool:
    """Whether `python -m proxy run --help` (the code on PYTHONPATH) lists --workers."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return "--workers" in result.stdout


@dataclass(frozen=True)
class GcFigures:
    max_pause_ms: float
    slow_pauses: int


def gc_figures(metrics_text: str) -> GcFigures | None:
    """Max GC pause and pauses over 5 ms from the proxy's /metrics (every series: workers)."""
    maximum, slow, seen = 0.0, 0, False
    for family in text_string_to_metric_families(metrics_text):
        for item in family.samples:
            if item.name == "callerid_proxy_gc_pause_max_seconds":
                maximum, seen = max(maximum, item.value), True
            elif item.name == "callerid_proxy_gc_slow_pauses_total":
                slow += int(item.value)
    return GcFigures(maximum * 1000, slow) if seen else None


def shed_count(metrics_text: str) -> int | None:
    """INVITEs answered 503 by the proxy's overload shedding: its shed counter, or (a `--workers`
    supervisor, which sums the workers' core counters) the core's `shed` event count; 0 when
    the family is there without a sample (nothing shed yet), None when neither is there."""
    shed: float | None = None
    events: float | None = None
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "callerid_proxy_shed":
            shed = shed or 0.0
        elif family.name == "callerid_proxy_events":
            events = events or 0.0
        for item in family.samples:
            if item.name == "callerid_proxy_shed_total":
                shed = (shed or 0.0) + item.value
            elif item.name == "callerid_proxy_events_total" and item.labels.get("event") == "shed":
                events = (events or 0.0) + item.value
    found = shed if shed is not None else events
    return None if found is None else int(found)


@dataclass
class Running:
    """A started system: where the PBX sends, what the trunk must see, which process to watch."""

    remote: str
    expected_host: str
    root_pid: int | None
    process: subprocess.Popen[bytes] | None = None
    admin: tuple[str, int] | None = None
    log: Path | None = None
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> str | None:
        if self.admin is None:
            return None
        url = f"http://{self.admin[0]}:{self.admin[1]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bytes(response.read()).decode()
        except OSError:
            return None

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
                return None
        return self.process.returncode


class System:
    """Something to benchmark; `start` returns it running for one transport."""

    name = "system"

    def start(self, transport: str, trunk_port: int, pbx_port: int, workdir: Path) -> Running:
        raise NotImplementedError


class Baseline(System):
    """No proxy: the PBX SIPp calls the trunk SIPp directly."""

    name = "baseline"

    def start(self, transport: str, trunk_port: int, pbx_port: int, workdir: Path) -> Running:
        return Running(remote=f"{HOST}:{trunk_port}", expected_host=HOST, root_pid=None)


class CallerIdProxy(System):
    """`python -m proxy run` with bench/rules.yaml, --admin for /metrics, INFO logging."""

    def __init__(
        self,
        workers: int | None = None,
        extra_args: tuple[str, ...] = (),
        python: str | None = None,
        label: str | None = None,
    ) -> None:
        self.workers = workers
        self.extra_args = extra_args  # more `proxy run` flags, e.g. ("--max-busy", "1")
        # Another interpreter with the proxy installed (bench/interpreters.py `install`); None:
        # this one, running the code on PYTHONPATH.
        self.python = python
        name = "callerid-proxy" if workers is None else f"callerid-proxy x{workers}"
        self.name = f"{name} ({label})" if label else name

    def command(self, settings: list[str]) -> list[str]:
        """`python -m proxy run` with `settings`, this system's workers and extra flags."""
        command = [self.python or sys.executable, "-m", "proxy", "run", *settings]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        return command + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        """This checkout on PYTHONPATH, unless another interpreter runs its own installed copy."""
        env = dict(os.environ)
        if self.python is not None:
            env.pop("PYTHONPATH", None)
        else:
            env["PYTHONPATH"] = os.environ.get("PYTHONPATH") or str(REPO)
        return env

    def start(self, transport: str, trunk_port: int, pbx_port: int, workdir: Path) -> Running:
        listen, admin = free_port(), free_port()
        log = workdir / f"{re.sub(r'[^A-Za-z0-9.]+', '-', self.name).strip('-')}.log"
        command = self.command([
            "--rules", str(RULES),
            "--listen", f"{HOST}:{listen}",
            "--pbx", f"{transport}:{HOST}:{pbx_port}",
            "--trunk", f"{transport}:{HOST}:{trunk_port}",
            "--pid-file", str(workdir / "proxy.pid"),
            "--secret", SECRET,
            "--admin", f"{HOST}:{admin}",
            "--log-level", "info",
            # one audit line per call, as Kamailio's xlog writes: the same job (the default
            # budget would write 20 per 10 s and a summary)
            "--audit-log-budget", "0",
        ])  # fmt: skip
        env = self.environment()
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        running = Running(
            remote=f"{HOST}:{listen}", expected_host=HOST, root_pid=process.pid,
            process=process, admin=(HOST, admin), log=log,
        )  # fmt: skip
        _wait_ready(running, listen, transport)
        wait_until(lambda: running.metrics() is not None, READY_TIMEOUT_S, "the proxy's /metrics")
        return running


class Kamailio(System):
    """Kamailio with bench/kamailio/kamailio.cfg, -m 1024 -M 64, foreground, its own run dir."""

    name = "kamailio"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def command(self, transport: str, listen: int, trunk_port: int, pbx_port: int,
                rundir: Path) -> list[str]:  # fmt: skip
        return [
            self.binary, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", "1024", "-M", "64",
            "-Y", str(rundir), "-P", str(rundir / "kamailio.pid"), "-w", str(rundir),
            "-l", f"udp:{HOST}:{listen}", "-l", f"tcp:{HOST}:{listen}",
            "-A", f'PBX_IP="{HOST}"',
            "-A", f'PBX_URI="sip:{HOST}:{pbx_port};transport={transport}"',
            "-A", f'TRUNK_IP="{HOST}"', "-A", f"TRUNK_PORT={trunk_port}",
            "-A", f'TRUNK_URI="sip:{HOST}:{trunk_port};transport={transport}"',
        ]  # fmt: skip

    def start(self, transport: str, trunk_port: int, pbx_port: int, workdir: Path) -> Running:
        listen = free_port()
        rundir = workdir / "kamailio-run"
        rundir.mkdir(exist_ok=True)
        log = workdir / "kamailio.log"
        command = self.command(transport, listen, trunk_port, pbx_port, rundir)
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, cwd=rundir, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        running = Running(
            remote=f"{HOST}:{listen}", expected_host=HOST, root_pid=process.pid,
            process=process, log=log,
        )  # fmt: skip
        _wait_ready(running, listen, transport)
        time.sleep(0.5)  # its worker processes are forked after the sockets are bound
        return running


def check_kamailio_config(binary: str) -> tuple[bool, str]:
    """`kamailio -c -f bench/kamailio/kamailio.cfg`: (ok, its output)."""
    result = subprocess.run(
        [binary, "-c", "-f", str(KAMAILIO_CFG)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    return result.returncode == 0 and "config file ok" in output, output


def _wait_ready(running: Running, port: int, transport: str) -> None:
    def ready() -> bool:
        if not running.alive():
            raise RuntimeError(f"exited before listening:\n{running.log_tail()}")
        return is_bound(HOST, port, "udp") and is_bound(HOST, port, "tcp")

    try:
        wait_until(ready, READY_TIMEOUT_S, f"{HOST}:{port} to be bound ({transport})")
    except BaseException:
        running.stop()
        raise

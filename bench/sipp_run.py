"""The two SIPp instances of one benchmark run: the trunk-side UAS and the PBX-side UAC.

Unlike tests/e2e/sipp.py these write no message trace (it would cost SIPp more than the system
under test at 3,000 calls/s); they write the stat CSV, the error log and, for the UAC, the
per-call response times (-trace_rtt).
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.sipp_stats import SippCounters, StatRow, final_counters, timeline
from tests.e2e.ports import free_port, is_bound, wait_until
from tests.e2e.sipp import SIPP

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UAS_SCENARIO = SCENARIOS / "trunk_uas.xml"
UAC_SCENARIO = SCENARIOS / "pbx_uac.xml"
CALLS_FILE = SCENARIOS / "calls.csv"
RTD_NAMES = ("invite_100", "invite_200")
RECV_TIMEOUT_MS = 5_000  # a call waiting longer than this for a message fails
SOCKET_BUFFER = 4 * 1024 * 1024
BIND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SippSpec:
    """One SIPp instance: scenario, local address, and (for the UAC) the remote and the load."""

    name: str
    scenario: Path
    port: int
    transport: str
    timeout_s: int
    host: str = "127.0.0.1"
    remote: str | None = None
    calls: int | None = None
    rate: float | None = None
    inject: Path | None = None
    expected_host: str | None = None
    stat_period: str = "1"  # SIPp's -fd: a -trace_stat row every second ("100ms": ten)

    def command(self, sipp: str, prefix: Path) -> list[str]:
        cmd = [sipp, "-sf", str(self.scenario)]
        if self.remote is not None:
            cmd.append(self.remote)
        mode = "t1" if self.transport == "tcp" else "u1"
        cmd += ["-i", self.host, "-p", str(self.port), "-t", mode]
        cmd += ["-ci", self.host, "-cp", str(free_port(self.host))]
        cmd += ["-timeout", str(self.timeout_s), "-timeout_error", "-nostdin"]
        cmd += ["-recv_timeout", str(RECV_TIMEOUT_MS), "-buff_size", str(SOCKET_BUFFER)]
        if self.calls is not None:
            cmd += ["-m", str(self.calls)]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}", "-rp", "1000", "-trace_rtt", "-rtt_freq", "1"]
        if self.inject is not None:
            cmd += ["-inf", str(self.inject)]
        if self.expected_host is not None:
            cmd += ["-set", "expected_host", self.expected_host]
        cmd += ["-trace_stat", "-stf", f"{prefix}.stat.csv", "-fd", self.stat_period]
        cmd += ["-trace_err", "-error_file", f"{prefix}.errors.log"]
        return cmd


@dataclass(frozen=True)
class SippOutcome:
    name: str
    returncode: int | None  # None: killed
    counters: SippCounters | None
    rtt_texts: tuple[str, ...]
    errors_tail: str
    timeline: tuple[StatRow, ...] = ()  # every -trace_stat row, for when counters changed


class SippInstance:
    """A SIPp subprocess whose files live in its own directory (its -trace_rtt file is
    written to the working directory, named after the scenario and the pid)."""

    def __init__(self, spec: SippSpec, workdir: Path) -> None:
        if SIPP is None:
            raise RuntimeError("sipp is not on PATH (Debian's sip-tester package)")
        self.spec = spec
        self.directory = workdir / spec.name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = self.directory / spec.name
        self._command = spec.command(SIPP, self.prefix)
        self._process: subprocess.Popen[bytes] | None = None
        self._killed = False

    def start(self) -> None:
        with (self.directory / "stderr.log").open("wb") as stderr:
            self._process = subprocess.Popen(
                self._command, cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip

    def wait_bound(self) -> None:
        spec = self.spec

        def bound() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"SIPp {spec.name} exited before binding: {self.tail()}")
            return is_bound(spec.host, spec.port, spec.transport)

        wait_until(bound, BIND_TIMEOUT_S, f"SIPp {spec.name} to bind {spec.host}:{spec.port}")

    def wait(self, timeout_s: float) -> bool:
        """Whether it exited within `timeout_s`."""
        assert self._process is not None, "start() first"
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def quit(self, grace_s: float = 10.0) -> None:
        """SIGUSR1 (SIPp stops and writes its final stats), then SIGKILL after `grace_s`."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGUSR1)
        if not self.wait(grace_s):
            self._process.kill()
            self._process.wait(timeout=10)
            self._killed = True

    def outcome(self) -> SippOutcome:
        code = None if self._process is None or self._killed else self._process.returncode
        stat = Path(f"{self.prefix}.stat.csv")
        text = stat.read_text(errors="replace") if stat.exists() else ""
        rtt = tuple(p.read_text(errors="replace") for p in sorted(self.directory.glob("*_rtt.csv")))
        return SippOutcome(self.spec.name, code, final_counters(text), rtt, self.tail(),
                           timeline(text))  # fmt: skip

    def tail(self, lines: int = 6) -> str:
        texts = []
        for path in (Path(f"{self.prefix}.errors.log"), self.directory / "stderr.log"):
            if path.exists():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(line[:200] for line in texts)

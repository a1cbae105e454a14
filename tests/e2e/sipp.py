"""Running SIPp scenarios from `sipp_scenarios/` and judging them by exit code and stat CSV."""

from __future__ import annotations

import csv
import itertools
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.ports import free_port, is_bound, wait_until

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "sipp_scenarios"
SIPP = shutil.which("sipp")

# A message that never comes fails the call after this long instead of after the global timeout.
RECV_TIMEOUT_MS = 10_000
# How long the background side may take to bind its port.
BIND_TIMEOUT_S = 10.0

# Numbers each run's files, so a second run in the same test never reads the first one's stats.
_run_numbers = itertools.count(1)


@dataclass(frozen=True)
class SippSide:
    """One SIPp instance playing one scenario on one local address.

    `remote` ("host:port") makes it a client; without it, it waits for calls (a server).
    `variables` are passed with `-set` and must match the scenario's <Global variables>.
    `builtin` plays SIPp's own scenario named `scenario` (`-sn uac`) instead of a file;
    `mode` overrides the `-t` mode derived from `transport` (e.g. "tn": one TCP connection per
    call); `extra_args` are appended to the command line as they are.
    """

    name: str
    scenario: str
    port: int
    variables: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    transport: str = "udp"
    remote: str | None = None
    calls: int = 1
    rate: float | None = None
    timeout_s: int = 30
    scenario_dir: Path = SCENARIO_DIR
    recv_timeout_ms: int = RECV_TIMEOUT_MS
    builtin: bool = False
    mode: str | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run left behind: exit code, final stat counters and its logs."""

    side: SippSide
    returncode: int | None  # None: killed after its timeout
    successful: int | None
    failed: int | None
    errors: str
    stderr: str
    messages: str
    message_file: Path | None = None  # the whole -trace_msg log (timings: trunk_availability.py)

    def report(self) -> str:
        code = "killed (timed out)" if self.returncode is None else str(self.returncode)
        return "\n".join(
            [
                f"--- SIPp {self.side.name} ({self.side.scenario}) exit={code} "
                f"successful={self.successful} failed={self.failed}",
                f"error log:\n{self.errors or '(empty)'}",
                f"stderr:\n{self.stderr or '(empty)'}",
                f"last messages:\n{self.messages or '(none)'}",
            ]
        )


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def read_final_stats(path: Path) -> tuple[int, int] | None:
    """(SuccessfulCall(C), FailedCall(C)) from the last row of a `-trace_stat` CSV."""
    if not path.exists():
        return None
    with path.open(newline="", errors="replace") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if row]
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    return int(last[header.index("SuccessfulCall(C)")]), int(last[header.index("FailedCall(C)")])


class SippProcess:
    """A SIPp subprocess with its stat, error and message files under `workdir`."""

    def __init__(self, side: SippSide, workdir: Path) -> None:
        if SIPP is None:
            raise RuntimeError("sipp is not on PATH")
        self.side = side
        self._prefix = workdir / f"sipp{next(_run_numbers)}-{side.name}-{side.port}"
        self._stat = self._prefix.with_suffix(".stat.csv")
        self._errors = self._prefix.with_suffix(".errors.log")
        self._messages = self._prefix.with_suffix(".messages.log")
        self._stderr = self._prefix.with_suffix(".stderr.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._killed = False

    def command(self) -> list[str]:
        side = self.side
        assert SIPP is not None
        if side.builtin:
            cmd = [SIPP, "-sn", side.scenario]
        else:
            cmd = [SIPP, "-sf", str(side.scenario_dir / side.scenario)]
        if side.remote is not None:
            cmd.append(side.remote)
        mode = side.mode or ("t1" if side.transport == "tcp" else "u1")
        cmd += ["-i", side.host, "-p", str(side.port), "-t", mode]
        cmd += ["-ci", side.host, "-cp", str(free_port(side.host))]
        cmd += ["-m", str(side.calls), "-timeout", str(side.timeout_s), "-timeout_error"]
        cmd += ["-recv_timeout", str(side.recv_timeout_ms), "-nostdin"]
        if side.rate is not None:
            cmd += ["-r", str(side.rate)]
        cmd += ["-trace_stat", "-stf", str(self._stat)]
        cmd += ["-trace_err", "-error_file", str(self._errors)]
        cmd += ["-trace_msg", "-message_file", str(self._messages)]
        for name, value in side.variables.items():
            cmd += ["-set", name, value]
        cmd += side.extra_args
        return cmd

    def start(self) -> None:
        with self._stderr.open("wb") as stderr:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def wait_bound(self) -> None:
        """Wait (bounded) until this server side has bound its port."""
        side = self.side

        def bound() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"SIPp exited before binding:\n{self.result().report()}")
            return is_bound(side.host, side.port, side.transport)

        wait_until(bound, BIND_TIMEOUT_S, f"SIPp {side.name} to bind {side.host}:{side.port}")

    def finish(self) -> SippResult:
        """Wait for SIPp to exit (bounded by its own -timeout plus a margin) and collect results."""
        assert self._process is not None, "start() first"
        try:
            self._process.wait(timeout=self.side.timeout_s + 15)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.result()

    def quit(self) -> SippResult:
        """Ask SIPp to stop taking new calls and exit once the current ones ended (SIGUSR1, as
        its `q` key): for a server that serves an open-ended number of calls (keepalives)."""
        assert self._process is not None, "start() first"
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGUSR1)
        return self.finish()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._killed = True

    def result(self, message_lines: int = 80) -> SippResult:
        """What SIPp left so far; `messages` holds the last `message_lines` lines of its log."""
        code = None if self._process is None or self._killed else self._process.returncode
        stats = read_final_stats(self._stat)
        return SippResult(
            side=self.side,
            returncode=code,
            successful=None if stats is None else stats[0],
            failed=None if stats is None else stats[1],
            errors=_tail(self._errors, 200),
            stderr=_tail(self._stderr, 40),
            messages=_tail(self._messages, message_lines),
            message_file=self._messages,
        )


def run_client(side: SippSide, workdir: Path) -> SippResult:
    """Run a client side to completion."""
    process = SippProcess(side, workdir)
    process.start()
    return process.finish()


def run_pair(server: SippSide, client: SippSide, workdir: Path) -> tuple[SippResult, SippResult]:
    """Start `server` in the background, wait until it listens, run `client`, collect both."""
    background = SippProcess(server, workdir)
    background.start()
    try:
        background.wait_bound()
        client_result = run_client(client, workdir)
        server_result = background.finish()
    finally:
        background.kill()
    return server_result, client_result


def run_with_servers(
    servers: Sequence[SippSide], client: SippSide, workdir: Path
) -> tuple[list[SippResult], SippResult]:
    """Like `run_pair` with several servers (e.g. one per trunk): start them all in the
    background, wait until each listens, run `client`, collect every server in order."""
    background = [SippProcess(server, workdir) for server in servers]
    try:
        for process in background:
            process.start()
        for process in background:
            process.wait_bound()
        client_result = run_client(client, workdir)
        server_results = [process.finish() for process in background]
    finally:
        for process in background:
            process.kill()
    return server_results, client_result


def assert_all_succeeded(results: Sequence[SippResult], calls: int, context: str = "") -> None:
    """Every side exited 0 and its stat CSV counts `calls` successful and 0 failed calls."""
    bad = [r for r in results if r.returncode != 0 or r.successful != calls or r.failed != 0]
    if bad:
        details = "\n".join(r.report() for r in results)
        raise AssertionError(
            f"expected {calls} successful and 0 failed calls on every side; "
            f"not so for {', '.join(r.side.name for r in bad)}\n{details}\n{context}"
        )


def assert_side_failed(result: SippResult, reason: str, context: str = "") -> None:
    """This side failed its one call (exit 1, one failed call in the stat CSV) for `reason`,
    a piece of the error SIPp logged (e.g. the strcmp or regexp that did not hold)."""
    failed = result.returncode == 1 and result.failed == 1 and result.successful == 0
    if not failed or reason not in result.errors:
        raise AssertionError(
            f"expected the call to fail on this side with {reason!r} in the error log\n"
            f"{result.report()}\n{context}"
        )

"""Stress: every issue-7 attack at full size against the real proxy on loopback, one at a time.

    python3 bench/hostile.py                      # all attacks, full size
    python3 bench/hostile.py --scale 0.1          # a tenth of every volume: a smoke run
    python3 bench/hostile.py --only via-flood,untrusted-invites --settle 60
    python3 bench/hostile.py --only silent-trunk --settle 90 --allocator malloc

The proxy runs with a 10,000-user rules file, its PBX on 127.0.0.1 and its trunk on 127.0.0.5
(UDP); attackers bind other 127.0.0.x addresses (untrusted). During each attack a probe thread
places a normal outbound call from the PBX every 0.3 s (a small Python UAC/UAS pair: user 1001
must reach the trunk as +3228880001, and get its 200 with its own From back), times
GET /healthz, and once asks the admin endpoint for a reload (what `callerid-proxy apply
--admin` does after validating: POST /reload with the token, confirmed by its answer).

Columns: RSS of the proxy before the attack / peak during it / right after / after `--settle`
seconds (MB); CPU seconds of the proxy during the attack; call setup = INVITE sent to 200
received at the PBX (median and worst, and how many of the probe calls completed with the right
caller ID); apply = the reload confirmation; admin = the slowest /healthz; log = bytes the proxy
logged, and the most it logged in any 60 s; tb = tracebacks in its log; targets = issue 7's
memory and log targets (RSS peak <= 2x before, settled within 20% of it when --settle is given,
under 100 KB of log a minute), "met" or what was missed. Loopback only, every loop bounded in
count and time. Prints numbers only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python3 bench/hostile.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from proxy import control  # noqa: E402
from tests.proxy.hostile_support import (  # noqa: E402
    PBX_HOST,
    TOKEN,
    RunningProxy,
    UdpPeer,
    options,
    running_proxy,
    tracebacks,
    untrusted_invite,
)
from tests.proxy.sip.support import invite, response_to  # noqa: E402

NUMBER_1001 = "+3228880001"
ATTACKERS = [f"127.0.0.{n}" for n in range(9, 60)]
PROBE_EVERY = 0.3


def rules_text(users: int) -> str:
    """rules/example.yaml with `users` more users (so that reloads parse a large file)."""
    text = (REPO / "rules" / "example.yaml").read_text()
    extra = "".join(f'  "{200000 + i}": "+3228880000"\n' for i in range(users))
    return text.replace('  "1002": default\n', '  "1002": default\n' + extra, 1)


# ----------------------------------------------------------------------------- probes
@dataclass
class Probe:
    """Places normal calls, times /healthz and one apply, while an attack runs."""

    proxy: RunningProxy
    setups: list[float] = field(default_factory=list)
    failed: int = 0
    admin_worst: float = 0.0
    apply_s: float | None = None
    apply_ok: bool = False
    apply: bool = True  # False: no reload during the attack (to measure the attack's memory alone)
    _stop: threading.Event = field(default_factory=threading.Event)
    _calls: int = 0

    def run(self) -> None:
        started = time.monotonic()
        for round_ in range(2000):  # bounded: 600 s at most
            if self._stop.is_set() or time.monotonic() - started > 600:
                return
            self._call()
            self._time_admin()
            if round_ == 1 and self.apply:  # once, with the attack under way
                self._apply()
            self._stop.wait(PROBE_EVERY)

    def stop(self) -> None:
        self._stop.set()

    def _call(self) -> None:
        self._calls += 1
        call_id = f"probe-{self._calls}-{time.monotonic_ns()}@pbx"
        pbx, trunk = self.proxy.pbx, self.proxy.trunk
        request = invite(call_id=call_id, branch=f"z9hG4bK-{call_id[:20]}").replace(
            b"127.0.0.1:5070;branch", f"{PBX_HOST}:{pbx.port};branch".encode(), 1
        )
        sent = time.monotonic()
        pbx.send(request)
        if not self._answer_at_trunk(call_id.encode(), trunk, sent):
            self.failed += 1
            return
        if self._ok_at_pbx(call_id.encode(), pbx, sent):
            self.setups.append(time.monotonic() - sent)
        else:
            self.failed += 1

    @staticmethod
    def _answer_at_trunk(call_id: bytes, trunk: UdpPeer, sent: float) -> bool:
        while time.monotonic() - sent < 5.0:
            with suppress(TimeoutError):
                data = trunk.receive(timeout=0.2)
                if b"Call-ID: " + call_id in data and data.startswith(b"INVITE"):
                    from_line = data.split(b"\r\nFrom:", 1)[1].split(b"\r\n", 1)[0]
                    if f"<sip:{NUMBER_1001}@".encode() not in from_line:
                        return False  # the wrong caller ID: a failed call
                    trunk.send(response_to(data, 200, "OK"))
                    return True
        return False

    @staticmethod
    def _ok_at_pbx(call_id: bytes, pbx: UdpPeer, sent: float) -> bool:
        while time.monotonic() - sent < 5.0:
            with suppress(TimeoutError):
                data = pbx.receive(timeout=0.2)
                if b"Call-ID: " + call_id in data and data.startswith(b"SIP/2.0 200"):
                    return b'From: "Alice" <sip:1001@pbx.example.com>' in data
        return False

    def _time_admin(self) -> None:
        started = time.monotonic()
        try:
            self.proxy.http("GET", "/healthz", timeout=5.0)
        except OSError:
            self.admin_worst = max(self.admin_worst, 5.0)
            return
        self.admin_worst = max(self.admin_worst, time.monotonic() - started)

    def _apply(self) -> None:
        version = self.proxy.status()["active_version"]
        started = time.monotonic()
        result = control.request_reload_via_admin(self.proxy.admin, version, 10.0, token=TOKEN)
        self.apply_s = time.monotonic() - started
        self.apply_ok = result.outcome is control.Outcome.APPLIED


@dataclass
class RssSampler:
    """The proxy's peak RSS, and its log's size over time (for the worst minute of growth)."""

    pid: int
    log: Path
    peak_kb: int = 0
    log_sizes: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for _ in range(100_000):
            with suppress(OSError):
                self.peak_kb = max(self.peak_kb, _rss_kb(self.pid))
                self.log_sizes.append((time.monotonic(), self.log.stat().st_size))
            if self._stop.wait(0.05):
                return

    def stop(self) -> None:
        self._stop.set()

    def worst_minute(self) -> int:
        """The most bytes logged in any 60 s of the samples (all of them if shorter)."""
        sizes, worst, end = self.log_sizes, 0, 0
        for start, (started, size) in enumerate(sizes):
            end = max(end, start)
            while end + 1 < len(sizes) and sizes[end + 1][0] - started <= 60.0:
                end += 1
            worst = max(worst, sizes[end][1] - size)
        return worst


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- attacks
Attack = Callable[[RunningProxy, float], str]  # runs one attack; returns its volume


def _tcp(host: str, port: int, stack: ExitStack) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stack.enter_context(sock)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    try:
        sock.connect((PBX_HOST, port))
    except OSError:
        return None
    return sock


def idle_connections(proxy: RunningProxy, scale: float) -> str:
    count = int(1000 * scale)
    with ExitStack() as stack:
        for _ in range(count):
            _tcp(ATTACKERS[0], proxy.port, stack)
        time.sleep(3.0)
        held = proxy.status()["tcp_untrusted_connections"]
    return f"{count} idle TCP from one address ({held} held)"


def slow_senders(proxy: RunningProxy, scale: float) -> str:
    count = int(200 * scale)
    message = options("slow")
    with ExitStack() as stack:
        socks = [s for i in range(count) if (s := _tcp(ATTACKERS[1 + i % 25], proxy.port, stack))]
        for index in range(8):  # one byte a second from each, for 8 s (deadline: 5 s)
            for sock in socks:
                with suppress(OSError):
                    sock.send(message[index : index + 1])
            time.sleep(1.0)
        still = proxy.status()["tcp_untrusted_connections"]
    return f"{count} x 1 byte/s for 8 s ({still} still open)"


def non_reader(proxy: RunningProxy, scale: float) -> str:
    count = int(20_000 * scale)
    batch = b"".join(options(f"nr-{n}") for n in range(100))
    sent = 0
    with ExitStack() as stack:
        sock = _tcp(ATTACKERS[30], proxy.port, stack)
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with suppress(OSError):
                while sent < count:
                    sock.sendall(batch)
                    sent += 100
    return f"{count} requests never read ({sent} sent before the cut)"


def big_numbers(proxy: RunningProxy, scale: float) -> str:
    huge = "9" * 4301
    attacker = UdpPeer(ATTACKERS[31], (PBX_HOST, proxy.port))
    base = options("big", transport="UDP", via_host=ATTACKERS[31])
    kinds = [
        base.replace(b"CSeq: 1 OPTIONS", f"CSeq: {huge} OPTIONS".encode()),
        base.replace(b"Content-Length: 0", f"Content-Length: {huge}".encode()),
        base.replace(b"Max-Forwards", f"Route: <sip:{PBX_HOST}:{proxy.port};lr;tr={huge}>\r\n"
                     "Max-Forwards".encode()),
    ]
    count = int(1000 * scale)
    try:
        for index in range(count):
            attacker.send(kinds[index % 3])
            proxy.pbx.send(kinds[index % 3].replace(ATTACKERS[31].encode(), PBX_HOST.encode()))
            if index % 100 == 99:
                attacker.drain()
                time.sleep(0.05)
        with ExitStack() as stack:
            for kind in kinds:
                sock = _tcp(ATTACKERS[32], proxy.port, stack)
                if sock is not None:
                    with suppress(OSError):
                        sock.sendall(kind.replace(b"/UDP", b"/TCP"))
        time.sleep(1.0)
    finally:
        attacker.close()
    return f"{2 * count} UDP + 3 TCP with 4,301-digit CSeq/Content-Length/tr="


def via_flood(proxy: RunningProxy, scale: float) -> str:
    vias = "".join(f"Via: SIP/2.0/UDP 10.{n // 250}.{n % 250}.1;branch=z9hG4bK{n}\r\n"
                   for n in range(4600))
    datagram = options("vias", transport="UDP").replace(b"Max-Forwards", vias.encode() +
                                                         b"Max-Forwards")[:65000]
    attacker = UdpPeer(ATTACKERS[33], (PBX_HOST, proxy.port))
    seconds = max(1, int(10 * scale))
    try:
        for _ in range(seconds * 60):  # 60 a second
            attacker.send(datagram)
            time.sleep(1 / 60)
            attacker.drain()
    finally:
        attacker.close()
    return f"{seconds * 60} x {len(datagram) // 1024} KB, 4,600 Vias, 60/s"


def silent_trunk(proxy: RunningProxy, scale: float) -> str:
    count = int(20_000 * scale)
    pbx = UdpPeer(PBX_HOST, (PBX_HOST, proxy.port))  # another PBX port: trusted by address
    try:
        for index in range(count):
            request = invite(call_id=f"silent-{index}@pbx", branch=f"z9hG4bK-silent-{index}")
            pbx.send(request.replace(b"127.0.0.1:5070;branch", f"{PBX_HOST}:{pbx.port};branch"
                                     .encode(), 1))
            if index % 200 == 199:
                pbx.drain()
                time.sleep(0.1)  # 2,000 a second
        time.sleep(1.0)
        pbx.drain()
    finally:
        pbx.close()
    return f"{count} INVITEs to a trunk that never answers"


def untrusted_invites(proxy: RunningProxy, scale: float) -> str:
    count = int(60_000 * scale)
    attacker = UdpPeer(ATTACKERS[34], (PBX_HOST, proxy.port))
    try:
        for index in range(count):
            attacker.send(untrusted_invite(index, via_host=ATTACKERS[34]))
            if index % 500 == 499:
                attacker.drain()
                time.sleep(0.1)  # 5,000 a second
        time.sleep(1.0)
    finally:
        attacker.close()
    return f"{count} untrusted INVITEs"


def reload_spam(proxy: RunningProxy, scale: float) -> str:
    signals = int(200 * scale)
    posts = 0
    for index in range(signals):  # 20 SIGHUPs a second, and a POST /reload every 4th
        os.kill(proxy.process.pid, signal.SIGHUP)
        if index % 4 == 0:
            with suppress(OSError):
                proxy.http("POST", "/reload", {"Authorization": f"Bearer {TOKEN}"})
                posts += 1
        time.sleep(0.05)
    time.sleep(1.0)
    parsed = proxy.status()["reloads_parsed"]
    return f"{signals} SIGHUP + {posts} POST /reload ({parsed} parses)"


ATTACKS: dict[str, Attack] = {
    "idle-connections": idle_connections,
    "slow-senders": slow_senders,
    "non-reader": non_reader,
    "big-numbers": big_numbers,
    "via-flood": via_flood,
    "silent-trunk": silent_trunk,
    "untrusted-invites": untrusted_invites,
    "reload-spam": reload_spam,
}


# ----------------------------------------------------------------------------- the table
@dataclass
class Row:
    attack: str
    volume: str
    rss_mb: tuple[float, float, float, float | None]
    cpu_s: float
    probe: Probe
    log_bytes: int
    log_minute: int
    tracebacks: int

    def targets(self) -> str:
        """Issue 7's: RSS never above 2x idle, back within 20% a minute later (when --settle is
        60 or more), under 100 KB of log in any minute."""
        before, peak, _, settled = self.rss_mb
        missed = []
        if peak > 2 * before:
            missed.append(f"peak {peak / before:.2f}x")
        if settled is not None and settled > 1.2 * before:
            missed.append(f"settled +{(settled / before - 1) * 100:.0f}%")
        if self.log_minute >= 100_000:
            missed.append("log/min")
        return "met" if not missed else "MISSED " + ", ".join(missed)

    def cells(self) -> list[str]:
        before, peak, after, settled = self.rss_mb
        rss = f"{before:.0f}/{peak:.0f}/{after:.0f}" + (f"/{settled:.0f}" if settled else "")
        setups = self.probe.setups
        calls = (f"{statistics.median(setups) * 1000:.0f}/{max(setups) * 1000:.0f} ms "
                 f"({len(setups)}/{len(setups) + self.probe.failed})") if setups else \
            f"none (0/{self.probe.failed})"
        apply = (f"{self.probe.apply_s * 1000:.0f} ms" + ("" if self.probe.apply_ok else " FAIL")
                 if self.probe.apply_s is not None else "-")
        return [self.attack, self.volume, rss, f"{self.cpu_s:.1f}", calls, apply,
                f"{self.probe.admin_worst * 1000:.0f} ms", f"{self.log_bytes:,}",
                f"{self.log_minute / 1000:.0f} KB", str(self.tracebacks), self.targets()]


HEADER = ["attack", "volume", "RSS MB before/peak/after[/settled]", "CPU s",
          "call setup p50/max (ok/all)", "apply", "admin max", "log bytes", "log/min max", "tb",
          "targets"]


def measure(proxy: RunningProxy, name: str, attack: Attack, scale: float, settle: float,
            apply: bool = True) -> Row:
    probe, sampler = Probe(proxy, apply=apply), RssSampler(proxy.process.pid, proxy.log)
    before_kb, cpu_before = _rss_kb(proxy.process.pid), proxy.cpu_seconds()
    log_before = proxy.log.stat().st_size
    tb_before = _tracebacks(proxy)
    threads = [threading.Thread(target=probe.run), threading.Thread(target=sampler.run)]
    for thread in threads:
        thread.start()
    try:
        volume = attack(proxy, scale)
    finally:
        probe.stop()
        for thread in threads[:1]:
            thread.join(timeout=30)
    after_kb, cpu = _rss_kb(proxy.process.pid), proxy.cpu_seconds() - cpu_before
    settled = None
    try:
        if settle:  # the sampler goes on: the peak and the log's worst minute include this
            time.sleep(settle)
            settled = _rss_kb(proxy.process.pid) / 1024
    finally:
        sampler.stop()
        threads[1].join(timeout=30)
    proxy.alive()
    rss = (before_kb / 1024, max(sampler.peak_kb, after_kb) / 1024, after_kb / 1024, settled)
    log_bytes = proxy.log.stat().st_size - log_before
    found = _tracebacks(proxy) - tb_before
    return Row(name, volume, rss, cpu, probe, log_bytes, sampler.worst_minute(), found)


def _tracebacks(proxy: RunningProxy) -> int:
    """Records with a Python traceback (a summary line naming an internal error is not one)."""
    return sum("Traceback" in record for record in tracebacks(proxy.log_text()))


def print_table(rows: list[Row]) -> None:
    grid = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(HEADER))]
    for line in grid:
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="volume factor (default 1)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after each attack before the last RSS reading")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ATTACKS)}")
    parser.add_argument("--keep-logs", type=Path, help="directory to copy each proxy log to")
    parser.add_argument("--no-apply", action="store_true",
                        help="skip the reload during each attack (its memory measured apart)")
    parser.add_argument("--users", type=int, default=10_000, help="rules file size")
    parser.add_argument("--allocator", choices=("pymalloc", "malloc"), default="pymalloc",
                        help="the proxy's PYTHONMALLOC (malloc: glibc for every object; see the "
                        "README's Security section)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # our own 1,000+ sockets
    rows = []
    env = {**os.environ, "PYTHONMALLOC": args.allocator}
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(rules_text(args.users))
        for name in names:  # a fresh proxy each: one attack's aftermath is not the next one's
            with running_proxy(Path(tmp), rules=rules, env=env) as proxy:
                time.sleep(1.0)
                rows.append(measure(proxy, name, ATTACKS[name], args.scale, args.settle,
                                    apply=not args.no_apply))
                if args.keep_logs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    (args.keep_logs / f"{name}.log").write_bytes(proxy.log.read_bytes())
            print(f"... {name} done", file=sys.stderr)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

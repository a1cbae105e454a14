"""`callerid-proxy run --workers N`: a supervisor process and N worker processes.

The supervisor binds the shared `--listen` addresses. Their UDP port is served by the
dispatcher thread (proxy/dispatch_loop.py), which hands every datagram to a worker chosen by
its Call-ID; their TCP listener is shared by all workers (each accepts from it, a connection
stays with the worker that accepted it). Worker `i` also has its own UDP and TCP port (listen
port + 1 + i, see proxy/worker_process.py) that its Via and Record-Route name.

The supervisor writes the pid and status files `apply` uses: SIGHUP is fanned out to every
worker and the status reports the reload once every worker confirmed it (or when one refused
it or did not answer). It restarts a worker that died, stops all of them on SIGTERM/SIGINT,
and with `--admin` serves /metrics and /status summed over the workers (each worker's own
admin endpoint is on the admin port + 1 + i, on the same host).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy import control, reply_port
from proxy.active_rules import ReloadOutcome
from proxy.admin import ADMIN_TOKEN_ENV, AdminServer
from proxy.dispatch_loop import SHED_AFTER_S, Dispatcher
from proxy.worker_process import WorkerSpec, hostport_text, worker_port

log = logging.getLogger("callerid_proxy.workers")
SECRET_ENV = "CALLERID_PROXY_SECRET"
REPLY_VIA_SUPERVISOR_ENV = "CALLERID_PROXY_REPLY_VIA_SUPERVISOR"
MAX_WORKERS = 64
READY_TIMEOUT_S = 15.0
RELOAD_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 0.25
SCRAPE_TIMEOUT_S = 1.0
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# workers: the children are workers; secret and admin token: via the environment, never argv
_NOT_PASSED = ("workers", "secret", "admin_token")


class SupervisorError(Exception):
    pass


def worker_pid_file(pid_file: Path, index: int) -> Path:
    return pid_file.with_name(f"{pid_file.name}.worker{index}")


def worker_arguments(settings: dict[str, Any], index: int, listen: tuple[tuple[str, int], ...],
                     admin: tuple[str, int] | None, pid_file: Path) -> list[str]:
    """`run` options for worker `index`: the supervisor's settings with the shared addresses
    resolved, its own pid file and admin address. Flags are the settings' names with `-` for
    `_`; lists repeat the flag."""
    chosen = {key: value for key, value in settings.items() if key not in _NOT_PASSED}
    chosen["listen"] = [hostport_text(host, port) for host, port in listen]
    chosen["pid_file"] = worker_pid_file(pid_file, index)
    chosen.pop("admin", None)
    if admin is not None:
        chosen["admin"] = hostport_text(admin[0], worker_port(admin[1], index))
    from proxy.run_cli import SETTINGS  # the one table of settings (run_cli imports us lazily)

    arguments: list[str] = []
    for key, value in chosen.items():
        row = SETTINGS.get(key)
        flag = row.option if row is not None else "--" + key.replace("_", "-")
        if row is not None and row.const is not None:  # a switch such as --tls-no-verify
            if value == row.const or str(value).lower() == str(row.const).lower():
                arguments.append(flag)
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is None or item is False:
                continue
            arguments += [flag] if item is True else [flag, str(item)]
    return arguments


def check_ports(listen: tuple[tuple[str, int], ...], admin: tuple[str, int] | None,
                workers: int) -> None:
    for host, port in (*listen, *([admin] if admin else [])):
        if worker_port(port, workers - 1) > 0xFFFF:
            raise SupervisorError(
                f"{hostport_text(host, port)}: {workers} workers need ports up to "
                f"{worker_port(port, workers - 1)}"
            )


@dataclass
class Worker:
    index: int
    pid_file: Path
    command: list[str]
    inbox: socket.socket  # the worker's end of its dispatch socket pair, kept across restarts
    admin: tuple[str, int] | None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    last_counters: Counter[str] = field(default_factory=Counter)
    gc_max_pause_s: float = 0.0  # the worker's longest GC pause, as last scraped
    gc_slow_pauses: int = 0

    @property
    def status_file(self) -> Path:
        return control.status_path(self.pid_file)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self) -> control.ProxyStatus | None:
        status = control.read_status(self.status_file)
        return status if status is not None and status.pid == self.pid else None


class Supervisor:
    def __init__(self, settings: dict[str, Any], listen: tuple[tuple[str, int], ...],
                 pid_file: Path, admin: tuple[str, int] | None, rules_path: Path,
                 rules_version: str, workers: int) -> None:
        self._settings = settings
        self._listen = listen
        self._pid_file = pid_file
        self._admin_address = admin
        self._rules_path = rules_path
        self._version = rules_version
        self._count = workers
        self._workers: list[Worker] = []
        self._udp: list[socket.socket] = []
        self._tcp: list[socket.socket] = []
        self._senders: list[socket.socket] = []
        # Replies from the workers' own sockets on the shared port (proxy/reply_port.py), unless
        # a shared socket cannot steer or the operator turned it off.
        self._send_direct = os.environ.get(REPLY_VIA_SUPERVISOR_ENV, "") != "1"
        self._lifeline_read, self._lifeline_write = os.pipe()
        self._env = _worker_environment(settings)
        self._dispatcher: Dispatcher | None = None
        self._reload_seq = 0
        self._last_outcome = ReloadOutcome(True, rules_version, ())
        self._retired: Counter[str] = Counter()
        self._stopping = False
        self._wrote_pid_file = False  # never remove another instance's files on a failed start
        self._stopped = asyncio.Event()
        self._reload_requested = asyncio.Event()
        # The same guard as a single process's admin endpoint: POST /reload needs the token.
        token = settings.get("admin_token") or os.environ.get(ADMIN_TOKEN_ENV) or None
        self._admin = AdminServer(self.status, self._reload_for_admin, token=token)
        self._admin.register(WorkersGc(self._workers))

    # ----------------------------------------------------------------- start and stop
    def bind(self) -> None:
        """The shared addresses; OSError when one is taken."""
        for host, port in self._listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            udp, steered = reply_port.bind_steered(host, port, steer=self._send_direct)
            self._send_direct = self._send_direct and steered
            _enlarge_buffers(udp)
            self._udp.append(udp)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            tcp.listen(1024)
            tcp.setblocking(False)
            self._tcp.append(tcp)
            log.info("supervisor listening on %s (udp dispatched by Call-ID, tcp shared)",
                     hostport_text(host, port))

    def start_workers(self) -> None:
        for index in range(self._count):
            sender, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            _enlarge_buffers(sender)
            _enlarge_buffers(inbox)
            self._senders.append(sender)
            spec = WorkerSpec(index, inbox.fileno(), self._lifeline_read,
                              tuple(sock.fileno() for sock in self._tcp), self._send_direct,
                              workers=self._count)
            pid_file = worker_pid_file(self._pid_file, index)
            admin = (None if self._admin_address is None else
                     (self._admin_address[0], worker_port(self._admin_address[1], index)))
            command = [sys.executable, "-m", "proxy", "run",
                       *worker_arguments(self._settings, index, self._listen,
                                         self._admin_address, self._pid_file),
                       "--worker-spec", spec.to_json()]
            worker = Worker(index, pid_file, command, inbox, admin)
            self._workers.append(worker)
            self._spawn(worker)
        for worker in self._workers:
            self._wait_ready(worker)
        # The dispatcher sheds by its own queue's wait as the workers do by theirs.
        shed_after = float(self._settings.get("max_loop_lag") or SHED_AFTER_S)
        self._dispatcher = Dispatcher(self._udp, self._senders, shed_after)
        self._dispatcher.start()

    def _spawn(self, worker: Worker) -> None:
        fds = (worker.inbox.fileno(), self._lifeline_read, *(s.fileno() for s in self._tcp))
        worker.process = subprocess.Popen(
            worker.command, stdin=subprocess.DEVNULL, pass_fds=fds, env=self._env
        )
        worker.started_at = time.monotonic()
        worker.restart_at = None
        worker.last_counters = Counter()
        log.info("worker %d started: pid %d, udp and tcp on %s", worker.index, worker.process.pid,
                 ", ".join(hostport_text(h, worker_port(p, worker.index)) for h, p in self._listen))

    def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while worker.status() is None:
            if not worker.alive():
                code = worker.process.returncode if worker.process else None
                raise SupervisorError(f"worker {worker.index} exited with {code} at start")
            if time.monotonic() > deadline:
                raise SupervisorError(f"worker {worker.index} not ready within "
                                      f"{READY_TIMEOUT_S:g} s")
            time.sleep(0.02)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        if self._admin_address is not None:
            await self._admin.start(*self._admin_address)
        control.write_pid_file(self._pid_file, os.getpid())
        self._wrote_pid_file = True
        self._write_status(self._last_outcome)
        log.info("supervisor pid %d: %d workers, rules version %s", os.getpid(), self._count,
                 self._version)
        while not self._stopped.is_set():  # signals only set flags; this loop acts on them
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload_all()
            self._watch()
            await asyncio.sleep(WATCH_INTERVAL_S)
        await self._admin.stop()

    def stop(self) -> None:
        """Stop the dispatcher and every worker (SIGTERM, then SIGKILL after the timeout)."""
        self._stopping = True
        log.info("supervisor shutting down %d workers", len(self._workers))
        if self._dispatcher is not None:
            self._dispatcher.stop()
        running = [w for w in self._workers if w.alive()]
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in running:
            assert worker.process is not None
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %g s: killed", worker.index,
                          STOP_TIMEOUT_S)
                worker.process.kill()
                worker.process.wait()
        for sock in (*self._udp, *self._tcp, *self._senders, *(w.inbox for w in self._workers)):
            sock.close()
        os.close(self._lifeline_write)
        os.close(self._lifeline_read)
        if self._wrote_pid_file:
            for path in (self._pid_file, control.status_path(self._pid_file)):
                path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- restarts
    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if self._stopping or worker.process is None:
                continue
            code = worker.process.poll()
            if code is not None and worker.restart_at is None:
                # A worker that keeps dying right after its start is retried ever more slowly.
                quick = now - worker.started_at < 5.0
                delay = min(30.0, 2.0 ** worker.restarts) if quick else 0.0
                log.error("worker %d (pid %d) exited with %d; restarting it in %.0f s",
                          worker.index, worker.process.pid, code, delay)
                self._retired += worker.last_counters
                worker.last_counters = Counter()
                worker.restart_at = now + delay
            if worker.restart_at is not None and now >= worker.restart_at:
                worker.restarts += 1
                self._spawn(worker)

    # ----------------------------------------------------------------- reload
    def reload_all(self) -> ReloadOutcome:
        """SIGHUP every running worker and wait (bounded) until each reported its reload."""
        pending: dict[int, int] = {}
        for worker in self._workers:
            status = worker.status()
            if status is not None and worker.process is not None:
                pending[worker.index] = status.reload_seq
                worker.process.send_signal(signal.SIGHUP)
        done: dict[int, control.ProxyStatus] = {}
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while len(done) < len(pending) and time.monotonic() < deadline:
            for index, before in pending.items():
                status = self._workers[index].status()
                if index not in done and status is not None and status.reload_seq > before:
                    done[index] = status
            time.sleep(0.02)
        outcome = _combine(pending, done)
        self._reload_seq += 1
        self._write_status(outcome)
        return outcome

    async def _reload_for_admin(self) -> dict[str, Any]:
        outcome = await asyncio.to_thread(self.reload_all)  # it waits for every worker
        return {"ok": outcome.ok, "version": self._version, "rules_path": str(self._rules_path),
                "errors": outcome.errors}

    def _write_status(self, outcome: ReloadOutcome) -> None:
        self._last_outcome = outcome
        if outcome.ok and outcome.version is not None:
            self._version = outcome.version
        else:
            current = [s.active_version for w in self._workers if (s := w.status()) is not None]
            self._version = current[0] if current else self._version
        control.write_status(control.status_path(self._pid_file), control.ProxyStatus(
            pid=os.getpid(),
            active_version=self._version,
            rules_path=str(self._rules_path),
            reload_seq=self._reload_seq,
            last_reload_ok=outcome.ok,
            last_reload_version=outcome.version,
            last_reload_errors=outcome.errors,
            updated_at=time.time(),
        ))

    # ----------------------------------------------------------------- metrics
    def status(self) -> dict[str, Any]:
        """The admin /status and the source of /metrics: the workers' counters summed (a
        restarted worker's last counts are kept, so the sums never go down)."""
        counters: Counter[str] = Counter(self._retired)
        transactions = connections = 0
        workers = []
        for worker in self._workers:
            scraped = _scrape(worker.admin) if worker.alive() else None
            if scraped is not None:
                worker.last_counters = Counter(scraped.get("counters", {}))
                transactions += int(scraped.get("transactions", 0))
                connections += int(scraped.get("tcp_connections", 0))
                worker.gc_max_pause_s = float(scraped.get("gc_max_pause_s", 0.0))
                worker.gc_slow_pauses = int(scraped.get("gc_slow_pauses", 0))
            counters += worker.last_counters
            workers.append({"index": worker.index, "pid": worker.pid, "alive": worker.alive(),
                            "restarts": worker.restarts, "scraped": scraped is not None})
        dispatch = self._dispatcher.counters if self._dispatcher is not None else None
        if dispatch is not None:
            counters["dispatcher_dropped"] = dispatch.dropped
            counters["dispatcher_replies"] = dispatch.replies
            counters["dispatcher_sent_ahead_to_shed"] = dispatch.sent_ahead
            counters["dispatcher_backlog_peak"] = dispatch.backlog_peak
            counters["dispatcher_stream_relayed"] = dispatch.relayed
            for worker_info, sent in zip(workers, dispatch.dispatched, strict=True):
                worker_info["dispatched"] = sent
        counters["worker_restarts"] = sum(w.restarts for w in self._workers)
        return {
            "active_version": self._version,
            "rules_path": str(self._rules_path),
            "reload_seq": self._reload_seq,
            "counters": dict(counters),
            "transactions": transactions,
            "tcp_connections": connections,
            "workers": workers,
            "replies_from_workers": self._send_direct,
            "dispatcher_drops": dict(dispatch.by_reason) if dispatch is not None else {},
        }


class WorkersGc(Collector):
    """Each worker's GC pauses at /metrics (`callerid_proxy_gc_pause_max_seconds` and
    `callerid_proxy_gc_slow_pauses_total` by worker), as a single process shows its own
    (proxy/gc_monitor.py): read from the scrape of the workers' /status that the counters'
    collector, registered before it, has just made."""

    def __init__(self, workers: list[Worker]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Any]:
        maximum = GaugeMetricFamily(
            "callerid_proxy_gc_pause_max_seconds",
            "Longest garbage-collection pause since the worker started", labels=["worker"],
        )
        slow = CounterMetricFamily(
            "callerid_proxy_gc_slow_pauses", "Garbage-collection pauses longer than 5 ms",
            labels=["worker"],
        )
        for worker in self._workers:
            maximum.add_metric([str(worker.index)], worker.gc_max_pause_s)
            slow.add_metric([str(worker.index)], worker.gc_slow_pauses)
        yield maximum
        yield slow


def _combine(pending: dict[int, int], done: dict[int, control.ProxyStatus]) -> ReloadOutcome:
    errors: list[str] = [] if pending else ["no worker is running"]
    versions = {status.active_version for status in done.values()}
    for index in sorted(pending):
        status = done.get(index)
        if status is None:
            errors.append(f"worker {index} did not confirm the reload within "
                          f"{RELOAD_TIMEOUT_S:g} s")
        elif not status.last_reload_ok:
            errors += [f"worker {index}: {line}" for line in status.last_reload_errors]
    if not errors and len(versions) > 1:
        errors.append(f"workers run different versions: {', '.join(sorted(versions))}")
    ok = not errors
    return ReloadOutcome(ok, versions.pop() if ok else None, tuple(errors))


def _scrape(admin: tuple[str, int] | None) -> dict[str, Any] | None:
    if admin is None:
        return None
    url = f"http://{hostport_text(*admin)}/status"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=SCRAPE_TIMEOUT_S) as response:
            data = json.loads(response.read())
    except (OSError, ValueError) as error:
        log.warning("cannot read the status of the worker at %s: %s", url, error)
        return None
    return data if isinstance(data, dict) else None


def _worker_environment(settings: dict[str, Any]) -> dict[str, str]:
    """Every worker must use the same secret, so that any of them restores any dialog."""
    env = dict(os.environ)
    secret = settings.get("secret") or env.get(SECRET_ENV)
    if not secret:
        log.warning("no --secret and no %s: using a random secret for this run; after a "
                    "restart, in-dialog requests of calls set up before it are refused",
                    SECRET_ENV)
        secret = secrets.token_hex(32)
    env[SECRET_ENV] = str(secret)
    if settings.get("admin_token"):
        env[ADMIN_TOKEN_ENV] = str(settings["admin_token"])
    return env


def _enlarge_buffers(sock: socket.socket) -> None:
    """Bursts wait in the kernel while a process is busy (see server._enlarge_socket_buffers)."""
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        for option in (force, plain):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
                break
            except OSError:
                continue


def run_supervisor(settings: dict[str, Any], listen: tuple[tuple[str, int], ...],
                   pid_file: Path, admin: tuple[str, int] | None, rules_path: Path,
                   rules_version: str, workers: int) -> int:
    """Serve with `workers` worker processes until SIGTERM/SIGINT; the exit code."""
    try:
        check_ports(listen, admin, workers)
    except SupervisorError as error:
        print(f"callerid-proxy run: {error}", file=sys.stderr)
        return 2
    supervisor = Supervisor(settings, listen, pid_file, admin, rules_path, rules_version, workers)
    try:
        supervisor.bind()
        supervisor.start_workers()
        asyncio.run(supervisor.serve())
    except OSError as error:
        print(f"callerid-proxy run: cannot listen: {error}", file=sys.stderr)
        supervisor.stop()
        return 1
    except SupervisorError as error:
        print(f"callerid-proxy run: {error}", file=sys.stderr)
        supervisor.stop()
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        supervisor.stop()
        return 130
    supervisor.stop()
    return 0

"""Server lifecycle: bind UDP and TCP, feed the core, send its output, arm its timer, reload."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import os
import signal
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy import CORE_BUILD, control, logs
from proxy.active_rules import ActiveRules, ReloadOutcome
from proxy.admin import AdminServer
from proxy.dns import TrunkResolver
from proxy.gc_monitor import PACE_S, GcMonitor
from proxy.loop_health import TICK_INTERVAL, LoopTicker, next_beat
from proxy.memory_trim import MemoryTrimmer
from proxy.metrics import EventLog, EventMetrics
from proxy.overload import OverloadDetector, OverloadLimits, Sample
from proxy.read_ahead import RETRANSMIT_GUARD, ReadAheadQueue
from proxy.reloader import Reloader
from proxy.sip.addresses import Outgoing, Source, Target
from proxy.sip.classify import side_of
from proxy.sip.core import ProxyCore
from proxy.sip.framing import Frame
from proxy.sip.policy import ProxyConfig
from proxy.tcp_accept import Acceptor, ConnectionBudget, TcpLimits, raise_open_files_limit
from proxy.tls import TlsConnection, TlsContexts, TlsSettings
from proxy.transport import TcpConnection, UdpEndpoint
from proxy.udp_errors import bind_udp

log = logging.getLogger("callerid_proxy.server")


@dataclass(frozen=True)
class ServerSettings:
    listen: tuple[tuple[str, int], ...]
    pid_file: Path
    max_message: int = 64 * 1024
    tcp_idle_timeout: float = 120.0
    admin: tuple[str, int] | None = None
    admin_token: str | None = None
    tcp: TcpLimits = field(default_factory=TcpLimits)
    tls_listen: tuple[tuple[str, int], ...] = ()  # `--listen tls:HOST:PORT`: TLS only there
    tls: TlsContexts | None = None  # None: the system store, verified, nothing presented
    trunk_resolver: TrunkResolver | None = None  # trunks given as host names (RFC 3263)
    # Queueing delay (seconds: the loop's lateness, a UDP probe's sojourn, TCP bytes waiting)
    # over this, sustained and growing, sheds new INVITEs with 503 (proxy/overload.py).
    max_loop_lag: float = 0.1
    lag_interval: float = PACE_S  # the GC pacer's: equal, the two share one wakeup (next_beat)
    # CPU share of the loop's thread, smoothed over `busy_window` seconds, above which new
    # INVITEs are shed (the core runs on one CPU: at 100% every queue only grows).
    max_busy: float = 0.95
    busy_window: float = 1.0
    overload_sustain: float = 0.2


ALL_SHED = 0.95  # a share shed from which on every new INVITE is (no per-INVITE decision)
READ_AHEAD_BATCH = 8  # waiting datagrams handled per loop turn while reading ahead (reads first)
READ_AHEAD_DROPS_LOG = 10.0  # seconds between warnings about datagrams the queue had no room for
# Reading ahead starts when this many bytes wait in a UDP socket's kernel queue at a check (a few
# ms of work: ~28 datagrams of 900 bytes, at the kernel's ~2.3 KB each) or while shedding, and
# lasts READ_AHEAD_HOLD seconds after the last such check.
READ_AHEAD_BYTES = 64 * 1024
READ_AHEAD_HOLD = 1.0
MAX_BACKLOG_CHECKS = 64  # TCP connections whose unread bytes one overload check looks at


class ProxyServer:
    def __init__(self, config: ProxyConfig, rules: ActiveRules, settings: ServerSettings) -> None:
        self.core = ProxyCore(config, rules)
        self.rules = rules
        self.settings = settings
        self._loop = asyncio.get_running_loop()
        self._udp: list[tuple[str, UdpEndpoint]] = []
        # (host, port) -> the socket that sends there: worked out once per next hop (a few
        # peers), not per datagram; emptied when it would grow past UDP_ROUTES (stray hosts).
        self._udp_routes: dict[tuple[str, int], UdpEndpoint] = {}
        self._servers: list[asyncio.Server] = []
        self._connections: dict[int, TcpConnection] = {}
        self._by_peer: dict[tuple[str, int], TcpConnection] = {}
        self._connection_ids = itertools.count(1)
        self._dialling: dict[Target, list[Outgoing]] = {}
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self.timer_wakeups = 0  # the core's loop timer fired (a wakeup each)
        self._reload_seq = 0
        self._reload_outcomes: Counter[str] = Counter()  # applied / refused, for /metrics
        self._last_outcome = ReloadOutcome(True, rules.current.version, ())
        self._stopped = asyncio.Event()
        self.metrics = EventMetrics()
        self._event_log = EventLog()
        self._lag_handle: asyncio.TimerHandle | None = None
        # One context for the overload check and the core's timer, not a copy per call_at.
        self._context = contextvars.copy_context()
        self._partial = 0.0  # 0 < share of new INVITEs shed < 1: decided per INVITE here
        self._all_shed = False  # every new INVITE is shed (the share reached ALL_SHED)
        self._overload_logged = False
        # While overloaded, or while a kernel queue builds, UDP reads ahead (proxy/read_ahead.py):
        # what is not answered at once waits here.
        self._read_ahead = False
        self._max_wait = settings.max_loop_lag  # no new INVITE admitted behind a longer wait
        self._waiting = ReadAheadQueue(UDP_BUFFER_BYTES)
        self._draining = False
        self._waiting_drops_logged = (0, 0.0)  # drops counted, when, at the last warning
        self.cpu_clock = time.thread_time  # CPU seconds of the loop's thread (tests: a fake)
        # The check's figures, re-made at every check and kept until the next, unboxed (issue
        # 7: a float kept so is served from a flood's pymalloc pool and pins its arena).
        self._lag = array("d", [0.0, 0.0, 0.0, self.cpu_clock(), 0.0, 0.0])
        # messages arrived, and that count at the last overload check (unboxed, as `_lag`)
        self._arrivals = array("q", [0, 0])
        self.overload = OverloadDetector(OverloadLimits(
            settings.max_loop_lag, settings.max_busy, settings.overload_sustain,
            settings.busy_window,
        ))  # fmt: skip
        # Hostile-input guards (issue 7): caps on accepted TCP, off-loop reloads, loop health.
        self.transport_counters: Counter[str] = Counter()
        self._budget = ConnectionBudget(settings.tcp, self._is_trusted_host)
        self._acceptors: list[Acceptor] = []
        self.reloader = Reloader(rules, self._reloaded)
        self.ticker = LoopTicker()
        self.trimmer = MemoryTrimmer(shrink=self.core.shrink)
        self.ticker.add(self._trim_after_flood)
        self._admin = AdminServer(
            self.status, self._reload_for_admin, token=settings.admin_token,
            health=self._health, ready=self._readiness,
        )  # fmt: skip
        self._admin.register(self.metrics)
        self.gc_monitor = GcMonitor()  # installed by run_cli once started; metrics at /metrics
        self._admin.register(self.gc_monitor)
        self._tls = settings.tls or TlsContexts(TlsSettings(), listening=False)
        self._dns_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        raise_open_files_limit()
        for host, port in self.settings.listen:
            sock = bind_udp(host, port)
            transport, endpoint = await self._loop.create_datagram_endpoint(
                functools.partial(UdpEndpoint, self, sock), sock=sock
            )
            _enlarge_socket_buffers(transport.get_extra_info("socket"))
            self._udp.append((host, endpoint))
            self._udp_routes.clear()
            acceptor = Acceptor(self._budget, self._accepted_connection, self.transport_counters)
            acceptor.listen(host, port)
            self._acceptors.append(acceptor)
            log.info("listening on %s:%d (udp, tcp)", host, port)
        await self._start_tls_and_dns()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._stopped.set)
        self._loop.add_signal_handler(signal.SIGHUP, self.reload_rules)
        if self.settings.admin is not None:
            await self._admin.start(*self.settings.admin)
        control.write_pid_file(self.settings.pid_file, os.getpid())
        self._schedule_lag_check()
        self.core.start_probes(self._loop.time())
        self._flush()
        self._write_status(ReloadOutcome(True, self.rules.current.version, ()))
        log.info("rules version %s active (%s)", self.rules.current.version, self.rules.path)
        log.info(logs.start_message(self.core.config, self.settings, self.rules.current.version),
                 extra={"event": "start", "rules_version": self.rules.current.version})

    async def _start_tls_and_dns(self) -> None:
        for host, port in self.settings.tls_listen:  # the same accept path and caps as TCP
            acceptor = Acceptor(
                self._budget, self._accepted_tls_connection, self.transport_counters,
                ssl=self._tls.server,
            )  # fmt: skip
            acceptor.listen(host, port)
            self._acceptors.append(acceptor)
            log.info("listening on %s:%d (tls)", host, port)
        resolver = self.settings.trunk_resolver
        if resolver is not None:
            self._dns_task = self._loop.create_task(resolver.run(self._trunks_resolved))

    def _trunks_resolved(self, trunks: tuple[Target, ...]) -> None:
        """DNS gave new trunk targets: the core uses them from its next call on."""
        self.core.set_trunks(trunks)

    async def adopt_listening_socket(self, sock: socket.socket) -> None:
        """Also accept TCP on a listening socket bound by someone else (the `--workers`
        supervisor's shared port); its connections are served like those of `start()`."""
        acceptor = Acceptor(self._budget, self._adopted_connection, self.transport_counters)
        acceptor.adopt(sock)
        self._acceptors.append(acceptor)

    def _adopted_connection(self, host: str) -> TcpConnection:
        """A connection accepted on an adopted socket (a worker marks those, stream_relay.py)."""
        return self._accepted_connection(host)

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        log.info("shutting down")
        if self._timer is not None:
            self._timer.cancel()
        for acceptor in self._acceptors:
            acceptor.close()
        if self._dns_task is not None:
            self._dns_task.cancel()
        if self._lag_handle is not None:
            self._lag_handle.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.close()
        for _, endpoint in self._udp:
            if endpoint.transport is not None:
                endpoint.transport.close()
        for server in self._servers:
            await server.wait_closed()
        await self._admin.stop()
        self._event_log.flush()
        control.remove_own_files(self.settings.pid_file, os.getpid())

    # ----------------------------------------------------------------- rules
    def reload_rules(self) -> None:
        """SIGHUP: parsed off the loop, coalesced with a reload already running (reloader.py)."""
        self.reloader.request()

    def _reloaded(self, outcome: ReloadOutcome) -> None:
        self._reload_seq += 1
        self._reload_outcomes["applied" if outcome.ok else "refused"] += 1
        self._write_status(outcome)

    async def _reload_for_admin(self) -> dict[str, Any]:
        outcome = await self.reloader.reload()
        return {
            "ok": outcome.ok,
            "version": self.rules.current.version,
            "rules_path": str(self.rules.path),
            "errors": outcome.errors,
        }

    def status(self) -> dict[str, Any]:
        return {
            "active_version": self.rules.current.version,
            "sip_core": CORE_BUILD.describe(),
            "rules_path": str(self.rules.path),
            "reload_seq": self._reload_seq,
            "last_reload": {
                "ok": self._last_outcome.ok,
                "version": self._last_outcome.version,
                "errors": list(self._last_outcome.errors),
            },
            "counters": dict(self.core.counters),
            "transactions": self.core.transaction_count,
            "server_transactions": self.core.server_transaction_count,
            "pending_transactions": self.core.pending_transaction_count,
            "dialogs": self.core.dialog_count,
            "overloaded": self.overload.overloaded,
            "loop_lag": self.loop_lag,
            "shed_fraction": round(self.overload.fraction, 3),
            "busy_share": round(self.busy_share, 3),
            "busy_smoothed": round(self.overload.busy_smoothed, 3),
            "queue_delay": round(self.overload.delay, 4),
            "read_ahead": self._read_ahead,
            "read_ahead_waiting": len(self._waiting),
            "read_ahead_dropped": self._waiting.dropped,
            "trunks": self.core.trunk_status(),
            "tcp_connections": len(self._connections),
            "connections_by_transport": dict(
                Counter(connection.transport_name for connection in self._connections.values())
            ),
            "reloads": dict(self._reload_outcomes),
            "tcp_untrusted_connections": self._budget.untrusted,
            "reloads_parsed": self.reloader.started,
            "loop_ticks": self.ticker.ticks,
            "loop_max_lag_s": round(self.ticker.max_lag, 4),
            "timer_wakeups": self.timer_wakeups,
            "gc_max_pause_s": self.gc_monitor.max_pause_s,
            "gc_slow_pauses": self.gc_monitor.slow_pauses,
            "transport": dict(self.transport_counters),
        }

    def _trim_after_flood(self) -> None:
        self.trimmer.tick(self.core.transaction_count)

    def _is_trusted_host(self, host: str) -> bool:
        """The PBX, a trunk or a --trusted network: exempt from the untrusted TCP caps."""
        return side_of(self.core.config, Source("tcp", host, 0)) is not None

    def _health(self) -> tuple[bool, dict[str, Any]]:
        age = self.ticker.age()
        return self.ticker.responsive(), {"loop_tick_age_s": round(age, 3)}

    def trunks_up(self) -> int:
        """Trunks the core's keepalives have not marked down (all, without --probe-interval)."""
        return sum(1 for trunk in self.core.trunk_status() if trunk["up"])

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        version = self.rules.current.version if self.rules.current is not None else None
        up = self.trunks_up()
        ready = version is not None and up > 0 and not self._stopped.is_set()
        return ready, {"rules_version": version, "trunks_up": up}

    def _write_status(self, outcome: ReloadOutcome) -> None:
        self._last_outcome = outcome
        status = control.ProxyStatus(
            pid=os.getpid(),
            active_version=self.rules.current.version,
            rules_path=str(self.rules.path),
            reload_seq=self._reload_seq,
            last_reload_ok=outcome.ok,
            last_reload_version=outcome.version,
            last_reload_errors=outcome.errors,
            updated_at=time.time(),
        )
        try:
            control.write_status(control.status_path(self.settings.pid_file), status)
        except OSError as error:  # e.g. out of descriptors: the reload itself stands
            log.error("cannot write the status file: %s", error)

    # ----------------------------------------------------------------- input from transports
    @property
    def busy_share(self) -> float:
        """CPU share of the loop's thread over the last overload check interval."""
        return self.overload.busy_share

    def on_message(self, data: bytes, source: Source) -> None:
        self._arrivals[0] += 1
        if (self._read_ahead or self._waiting) and source.transport == "udp":
            self._arrived_while_overloaded(data, source)
            return
        if self._partial and data.startswith(b"INVITE "):
            self._shed_or_admit()
        self._handle(data, source)

    def on_shed_by_dispatcher(self, data: bytes, source: Source) -> None:
        """A new INVITE the `--workers` dispatcher sent ahead of its backlog (it has waited
        there past `--max-loop-lag`, proxy/dispatch_loop.py): answered at once, as a shed
        INVITE read ahead is. The core still judges it: an outsider's is refused as always, and
        the retransmission of an INVITE admitted earlier gets its transaction's answer."""
        self._arrivals[0] += 1
        self.core.set_overloaded(True)
        self._handle(data, source)
        self.core.set_overloaded(self._all_shed)

    def _handle(self, data: bytes, source: Source) -> None:
        try:
            self.core.receive(data, source, self._loop.time())
        except Exception:  # the process never dies on one message; its events say what it refused
            self.core.counters["internal_errors"] += 1
            log.exception("internal error on a message from %s:%s", source.host, source.port)
        self._flush()

    def _arrived_while_overloaded(self, data: bytes, source: Source) -> None:
        """Reading ahead (proxy/read_ahead.py): a new INVITE to be shed is answered 503 the
        moment it is read, not after the queue in front of it; everything else waits its turn
        (responses first, then requests in arrival order) and is worked off in batches
        between reads. An untrusted source's
        refusal costs no more than a shed INVITE (a glance, issue 7), so it is answered at
        once too."""
        now = self._loop.time()
        waiting = self._waiting
        shed = False
        if data.startswith(b"INVITE "):
            # Shed as the detector steers, and whenever what waits has waited the longest a
            # message may (`--max-loop-lag`): the queue never grows past it (drop by sojourn
            # time, like CoDel, RFC 8289), whatever the detector has seen so far.
            shed = self._sheds_next_invite() or waiting.oldest_wait(now) >= self._max_wait
        if shed and (
            waiting.oldest_wait(now) < RETRANSMIT_GUARD or not waiting.may_hold_original_of(data)
        ):
            self.core.set_overloaded(True)
            self._handle(data, source)  # the glance's 503, or the transaction of an admitted one
            return
        if side_of(self.core.config, source) is None:
            self._handle(data, source)
            return
        if not waiting.put(data, source, now, shed):
            self.metrics.dropped["udp read-ahead queue full"] += 1
            return
        if not self._draining:
            self._draining = True
            self._loop.call_soon(self._work_off_waiting)

    def _sheds_next_invite(self) -> bool:
        if self._all_shed:
            return True
        if not self._partial:
            return False
        lag = self._lag  # the credit unboxed: a float kept from a flood would pin its arena
        lag[_SHED_CREDIT] += self._partial
        if lag[_SHED_CREDIT] < 1.0:
            return False
        lag[_SHED_CREDIT] -= 1.0
        return True

    def _work_off_waiting(self) -> None:
        """One batch of the datagrams waiting, then back to the loop (which reads what has
        arrived meanwhile) if more wait. Each new INVITE among them is admitted or shed as was
        decided when it came."""
        self._draining = False
        waiting, core = self._waiting, self.core
        for _ in range(READ_AHEAD_BATCH):
            if not waiting:
                break
            data, source, shed = waiting.take()
            core.set_overloaded(shed)
            self._handle(data, source)
        core.set_overloaded(self._all_shed)
        if waiting and not self._draining:
            self._draining = True
            self._loop.call_soon(self._work_off_waiting)

    def on_broken_stream(self, frame: Frame, source: Source) -> None:
        self.core.receive_broken_stream(frame.data, frame.reason, source, status=frame.status)
        self._flush()

    def on_connection_closed(self, connection: TcpConnection) -> None:
        if connection.accepted_from is not None:
            self._budget.release(connection.accepted_from)
        self._connections.pop(connection.id, None)
        if self._by_peer.get(connection.peer) is connection:
            del self._by_peer[connection.peer]

    def _accepted_connection(
        self, host: str, kind: type[TcpConnection] = TcpConnection
    ) -> TcpConnection:
        connection = kind(
            self,
            next(self._connection_ids),
            max_message=self.settings.max_message,
            idle_timeout=self.settings.tcp_idle_timeout,
            limits=self.settings.tcp,
            trusted=self._is_trusted_host(host),
            counters=self.transport_counters,
            accepted_from=host,
        )
        return connection

    def _accepted_tls_connection(self, host: str) -> TcpConnection:
        return self._accepted_connection(host, TlsConnection)

    def on_connection_made(self, connection: TcpConnection) -> None:
        """Accepted or dialled: replies and relayed messages find it by id or by peer address."""
        self._connections[connection.id] = connection
        self._by_peer[connection.peer] = connection
        if connection.dialled is not None:
            # What waited for the dial goes first, in order, in the same step that makes the
            # connection findable by peer: nothing sent from now on can overtake it.
            for queued in self._dialling.pop(connection.dialled, []):
                connection.send(queued.data)

    # ----------------------------------------------------------------- output
    def _flush(self) -> None:
        self._flushing = True
        try:
            # A failed send (or an ICMP error read while sending) makes the core try the next
            # trunk or answer 503: those go out in the next round, not at the next wakeup.
            for _ in range(FLUSH_ROUNDS):
                batch = self.core.datagrams_to_send()
                if not batch:
                    break
                for outgoing in batch:
                    try:
                        self._send(outgoing)
                    except (OSError, ValueError) as error:  # ValueError: uvloop, non-IP address
                        self._on_send_error(outgoing, error)
        finally:
            self._flushing = False
        self._handle_events()
        self._arm_timer()

    def _on_send_error(self, outgoing: Outgoing, error: Exception) -> None:
        log.warning("send to %s failed: %s", outgoing.target.hostport(), error)
        self.core.transport_failed(outgoing.target, self._loop.time())

    def on_unreachable(self, target: Target) -> None:
        """ICMP said nobody listens at `target` (proxy/udp_errors.py): its pending requests
        fail over now (RFC 3261 8.1.3.1)."""
        if log.isEnabledFor(logging.DEBUG):  # the failover itself is an event (logged)
            log.debug("udp %s unreachable (ICMP)", target.hostport())
        self.core.transport_failed(target, self._loop.time())
        if not self._flushing:
            self._flush()

    def _handle_events(self) -> None:
        events = self.core.events_to_handle()
        if not events:
            return
        observe = self.metrics.observe
        for event in events:
            observe(event)
        self._event_log.handle(events)

    # ----------------------------------------------------------------- overload
    @property
    def loop_lag(self) -> float:
        """How late the last overload check ran, in seconds."""
        return self._lag[_LAG]

    def _schedule_lag_check(self) -> None:
        lag = self._lag
        lag[_LAG_STARTED] = self._loop.time()
        # on the beat the GC pacer keeps too: one wakeup of an idle loop for both
        lag[_LAG_EXPECTED] = next_beat(lag[_LAG_STARTED], self.settings.lag_interval)
        self._lag_handle = self._loop.call_at(
            lag[_LAG_EXPECTED], self._check_lag, context=self._context
        )

    def _check_lag(self) -> None:
        """The one periodic check of the loop (also the health tick): how late it runs, the
        loop thread's CPU share, and the queueing delays (UDP probes back, TCP bytes waiting)
        go to the overload detector (proxy/overload.py), which says when to shed new INVITEs
        and when to admit them again."""
        now, lag = self._loop.time(), self._lag
        cpu = self.cpu_clock()
        lag[_LAG] = max(0.0, now - lag[_LAG_EXPECTED])
        elapsed = max(now - lag[_LAG_STARTED], 1e-3)
        sojourns: list[float] = []
        outstanding = 0.0
        for _, endpoint in self._udp:
            sojourns += endpoint.take_sojourns()
            outstanding = max(outstanding, endpoint.oldest_probe_age(now))
        # What waits in the read-ahead queue waits as long as its oldest: a queueing delay.
        backlog = max(self._tcp_backlog(elapsed), self._waiting.oldest_wait(now))
        sample = Sample(now, lag[_LAG], cpu - lag[_CPU_AT], elapsed, tuple(sojourns),
                        outstanding, backlog)  # fmt: skip
        lag[_CPU_AT] = cpu
        detector = self.overload
        if detector.sample(sample):
            self._overload_changed()
        queued = self._kernel_queues()
        arrivals = self._arrivals
        idle = arrivals[0] == arrivals[1]
        arrivals[1] = arrivals[0]
        for (_, endpoint), queued_bytes in zip(self._udp, queued, strict=True):
            endpoint.probe_unless_idle(now, queued_bytes, idle=idle)
        self._decide_read_ahead(now, queued)
        if now - self.ticker.last_tick >= TICK_INTERVAL:
            self.ticker.tick(now)
        self._event_log.flush()  # the audit lines since the last check, in one write
        self._warn_of_read_ahead_drops(now)
        self._update_gauges()
        self._schedule_lag_check()

    def _shed_or_admit(self) -> None:
        """Shedding a fraction of new INVITEs: this one is shed when the credit of shares
        reaches one (evenly spread, no randomness). A retransmission of an admitted INVITE
        never reaches the core's shed check (its transaction absorbs it)."""
        lag = self._lag
        lag[_SHED_CREDIT] += self._partial
        shed = lag[_SHED_CREDIT] >= 1.0
        if shed:
            lag[_SHED_CREDIT] -= 1.0
        self.core.set_overloaded(shed)

    def _overload_changed(self) -> None:
        detector = self.overload
        fraction = detector.fraction if detector.overloaded else 0.0
        full = fraction >= ALL_SHED
        self._partial = fraction if fraction > 0.0 and not full else 0.0
        self._all_shed = full
        if detector.overloaded:
            self._read_ahead = True
        self.core.set_overloaded(full)
        if detector.overloaded == self._overload_logged:
            return  # only the fraction moved: a gauge says it
        self._overload_logged = detector.overloaded
        if detector.overloaded:
            log.warning("overload (%s): queueing delay %.0f ms, loop lag %.0f ms, cpu %.0f%%: "
                        "shedding new INVITEs with 503 (a share steered by the delay)",
                        detector.cause, detector.delay * 1e3, self.loop_lag * 1e3,
                        detector.busy_smoothed * 100)  # fmt: skip
        else:
            log.warning("queueing delay %.0f ms, loop lag %.0f ms, cpu %.0f%%: admitting new "
                        "INVITEs", detector.delay * 1e3, self.loop_lag * 1e3,
                        detector.busy_smoothed * 100)  # fmt: skip

    def _kernel_queues(self) -> list[int]:
        """Bytes in each UDP socket's kernel receive queue now (in `self._udp`'s order)."""
        return [endpoint.kernel_queue_bytes() for _, endpoint in self._udp]

    def _decide_read_ahead(self, now: float, kernel_queues: list[int]) -> None:
        """Read ahead (proxy/read_ahead.py) while shedding or while a kernel queue builds
        (`kernel_queues`, read once per check), and READ_AHEAD_HOLD seconds more; otherwise
        every datagram is handled as it is read."""
        building = len(self._waiting) >= READ_AHEAD_BATCH or any(
            queued >= READ_AHEAD_BYTES for queued in kernel_queues
        )
        if building or self.overload.overloaded:
            self._lag[_READ_AHEAD_UNTIL] = now + READ_AHEAD_HOLD  # unboxed: see `_lag`
        self._read_ahead = now < self._lag[_READ_AHEAD_UNTIL]

    def _warn_of_read_ahead_drops(self, now: float) -> None:
        """Datagrams the read-ahead queue had no room for: one warning per interval at most."""
        dropped = self._waiting.dropped
        logged, when = self._waiting_drops_logged
        if dropped == logged or now - when < READ_AHEAD_DROPS_LOG:
            return
        self._waiting_drops_logged = (dropped, now)
        log.warning("overload: %d datagrams dropped since the last warning, the read-ahead queue "
                    "holding %d bytes (peers retransmit them)", dropped - logged,
                    self._waiting.bytes_waiting)  # fmt: skip

    def _tcp_backlog(self, elapsed: float) -> float:
        """Seconds of bytes waiting on the TCP connections busy since the last check (framed
        and not handled yet, or unread in the kernel), at the rate each was handled: the queue
        the loop's lateness does not show."""
        worst, checked = 0.0, 0
        for connection in self._connections.values():
            handled = connection.bytes_handled - connection.bytes_at_sample
            if handled <= 0 and not connection.waiting:
                continue
            connection.bytes_at_sample = connection.bytes_handled
            if checked >= MAX_BACKLOG_CHECKS:
                continue
            checked += 1
            queued = connection.queued_bytes()
            if queued:
                worst = max(worst, queued * elapsed / handled if handled > 0 else elapsed)
        return worst

    def _update_gauges(self) -> None:
        gauge = self.metrics.set_gauge
        gauge("callerid_proxy_loop_lag_seconds", "Event loop lag, last sample", self.loop_lag)
        gauge("callerid_proxy_busy_share", "Share of the last interval spent handling SIP",
              self.busy_share)
        gauge("callerid_proxy_overloaded", "1 while new INVITEs are shed (all or a share)",
              self.overload.overloaded)
        gauge("callerid_proxy_shed_fraction", "Share of new INVITEs shed", self.overload.fraction)
        gauge("callerid_proxy_server_transactions", "Live server transactions",
              self.core.server_transaction_count)
        gauge("callerid_proxy_pending_transactions",
              "Server transactions without a final answer yet (bounded by --max-transactions)",
              self.core.pending_transaction_count)
        gauge("callerid_proxy_dialogs", "Dialogs remembered", self.core.dialog_count)

    def _send(self, outgoing: Outgoing) -> None:
        target = outgoing.target
        if target.transport == "udp":
            self._udp_for(target).send(outgoing.data, target)
            return
        connection = self._connection_for(outgoing)
        if connection is None:
            self._dial(outgoing)
            return
        if outgoing.data:
            connection.send(outgoing.data)
        if outgoing.close_after:
            connection.close()

    def _facing_host(self, target: Target, transport: str) -> str:
        config = self.core.config
        return config.facing(config.side_of_target(target), transport, target.host).host

    def _udp_for(self, target: Target) -> UdpEndpoint:
        key = (target.host, target.port)
        endpoint = self._udp_routes.get(key)
        if endpoint is None:
            if len(self._udp_routes) >= UDP_ROUTES:
                self._udp_routes.clear()
            endpoint = self._udp_routes[key] = self._udp_route(target)
        return endpoint

    def _udp_route(self, target: Target) -> UdpEndpoint:
        """The socket bound to the address this side is shown, so that replies come back to it;
        else the first one of the target's address family."""
        facing = self._facing_host(target, "udp")
        same_family = [(h, e) for h, e in self._udp if (":" in h) == (":" in target.host)]
        for listen_host, endpoint in same_family:
            if listen_host == facing:
                return endpoint
        return (same_family or self._udp)[0][1]

    def _connection_for(self, outgoing: Outgoing) -> TcpConnection | None:
        if outgoing.connection is not None:
            connection = self._connections.get(outgoing.connection)
            if connection is not None and connection.alive:
                return connection
        target = outgoing.target
        connection = self._by_peer.get((target.host, target.port))
        return connection if connection is not None and connection.alive else None

    def _dial(self, outgoing: Outgoing) -> None:
        target = outgoing.target
        if outgoing.close_after and not outgoing.data:
            return
        queue = self._dialling.get(target)
        if queue is not None:
            queue.append(outgoing)
            return
        self._dialling[target] = [outgoing]
        self._loop.create_task(self._connect(target))

    def _local_address_for(self, target: Target) -> tuple[str, int] | None:
        """Dial from the address this side is shown, when it is one we listen on."""
        facing = self._facing_host(target, "tcp")
        listening = {host for host, _ in self.settings.listen}
        return (facing, 0) if facing in listening and len(listening) > 1 else None

    async def _connect(self, target: Target) -> None:
        connection_class = TlsConnection if target.transport == "tls" else TcpConnection
        try:
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: connection_class(
                        self,
                        next(self._connection_ids),
                        dialled=target,
                        max_message=self.settings.max_message,
                        idle_timeout=self.settings.tcp_idle_timeout,
                        limits=self.settings.tcp,
                        counters=self.transport_counters,
                    ),
                    target.host,
                    target.port,
                    local_addr=self._local_address_for(target),
                    **self._tls.dial_options(target),
                ),
                timeout=5.0,
            )
        except (OSError, TimeoutError) as error:
            log.warning("%s connect to %s failed: %s", target.transport, target.hostport(), error)
            self._dialling.pop(target, None)
            self.core.transport_failed(target, self._loop.time())
            self._flush()
            return
        self._dialling.pop(target, None)  # sent by on_connection_made, unless it was gone

    def _arm_timer(self) -> None:
        """One loop timer for the whole core, moved only when the core's next deadline comes
        earlier than the armed one: a later deadline lets the armed timer fire early once (the
        core handles nothing then) instead of a cancel and a new timer per message."""
        deadline = self.core.get_timer()
        armed = self._timer_deadline
        if deadline is None or (armed is not None and armed <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer, context=self._context)

    def _on_timer(self) -> None:
        self.timer_wakeups += 1
        self._timer = None
        self._timer_deadline = None
        try:
            self.core.handle_timer(self._loop.time())
        except Exception:
            self.core.counters["internal_errors"] += 1
            log.exception("internal error in timer handling")
        self._flush()


# Slots of ProxyServer._lag.
_LAG_STARTED, _LAG_EXPECTED, _LAG, _CPU_AT, _SHED_CREDIT, _READ_AHEAD_UNTIL = range(6)
UDP_BUFFER_BYTES = 4 * 1024 * 1024
UDP_ROUTES = 1024  # next hops whose sending socket is remembered (proxy peers: a handful)
FLUSH_ROUNDS = 8  # bounded: each round is a failover step's output


def _enlarge_socket_buffers(sock: socket.socket | None) -> None:
    """A burst of datagrams must wait in the kernel, not be dropped, while the loop is busy:
    the default receive buffer holds only ~100 SIP messages. SO_RCVBUFFORCE passes the
    rmem_max cap when we run with CAP_NET_ADMIN; otherwise we get what the cap allows."""
    if sock is None:
        return
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force or plain, UDP_BUFFER_BYTES)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, UDP_BUFFER_BYTES)
            except OSError as error:
                log.warning("cannot enlarge UDP socket buffers: %s", error)
    log.debug("udp receive buffer: %d bytes", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

"""The glue between the core's events and the outside: log lines (formatted only when their level
is on, with structured fields in `extra` for a JSON formatter), the audit line of every caller-ID
decision, and Prometheus metrics (plain counters updated per event, turned into metric families
only at scrape time)."""

from __future__ import annotations

import bisect
import logging
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from proxy import logs
from proxy.log_summary import AUDIT_EVENT
from proxy.sip.addresses import Source, Target
from proxy.sip.counters import Counts
from proxy.sip.events import (
    Answered,
    CallerIdDecided,
    Dropped,
    Event,
    FailedOver,
    Forwarded,
    Refused,
    ResponseRelayed,
    Shed,
    TimedOut,
    TrunkProbed,
    TrunkStateChanged,
)

K = TypeVar("K")
core_log = logging.getLogger("callerid_proxy.core")
transactions_log = logging.getLogger("callerid_proxy.transactions")
AUDIT_LINE = "call-id=%s user=%s destination=%s shown=%s step=%s privacy=%s reason=%r rules=%s"
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Histogram:
    """Cumulative buckets as Prometheus wants them, kept as plain counts, unboxed (issue 7: a
    value object re-made per observation and kept would pin a flood's pymalloc arena)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = array("q", bytes(8 * (len(bounds) + 1)))
        self._total = array("d", [0.0])

    @property
    def total(self) -> float:
        return self._total[0]

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self._total[0] += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


GAUGE_SLOTS = 64  # 512 bytes of values, made once: more gauges than the proxy sets


class Gauges:
    """Named gauge values, unboxed (issue 7): a (documentation, value) tuple and a float re-made
    per loop check and kept until the next one are two blocks that a flood's pymalloc pools
    serve, and each check's pair lands in whatever pool is first on the free list, so the last
    pair pins a flood arena. Here the names and their documentation are kept from the first set
    (at start, before any flood) and the values live in one array."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, str]] = {}  # name -> (slot, documentation)
        self._values = array("d", bytes(8 * GAUGE_SLOTS))

    def set(self, name: str, documentation: str, value: float) -> None:
        known = self._slots.get(name)
        if known is None:
            if len(self._slots) == len(self._values):
                self._values.extend(array("d", bytes(8 * len(self._values))))  # rare
            known = self._slots[name] = (len(self._slots), documentation)
        self._values[known[0]] = value

    def items(self) -> list[tuple[str, tuple[str, float]]]:
        """(name, (documentation, value)), sorted by name."""
        values = self._values
        return sorted((name, (documentation, values[slot]))
                      for name, (slot, documentation) in self._slots.items())


class EventMetrics(Collector):
    """Counters by label, per event; gauges read from the core at scrape time."""

    def __init__(self) -> None:
        self.decisions: Counts[str] = Counts()  # by resolution step
        # Per message: keyed by the event's own values (a hop's Target, a status class as a
        # number); their labels are formatted at scrape time, not per message. A key first
        # seen keeps its Target (a few small objects, as the label string kept before).
        self.requests: Counts[tuple[str, Target, str]] = Counts()  # side, next hop, method
        self.responses: Counts[tuple[str, int, Target]] = Counts()  # method, class, from hop
        self.failovers: Counts[tuple[str, str]] = Counts()
        self.dropped: Counts[str] = Counts()
        self.refused: Counts[str] = Counts()
        self.shed: Counts[str] = Counts()
        self.answered: Counts[tuple[str, str]] = Counts()  # status, cause/timer
        self.probes: Counts[tuple[str, str]] = Counts()  # trunk, status or "none"
        self.trunk_up: dict[str, bool] = {}
        self.first_response = Histogram()
        self.final_response = Histogram()
        self.gauges = Gauges()

    def observe(self, event: Event) -> None:
        if isinstance(event, ResponseRelayed):
            self.responses.add((event.method, event.status // 100, event.hop))
            if event.method == "INVITE":
                if event.first:
                    self.first_response.observe(event.since_request)
                if event.status >= 200:
                    self.final_response.observe(event.since_request)
        elif isinstance(event, Forwarded):
            self.requests.add((event.side, event.destination, event.method))
        elif isinstance(event, CallerIdDecided):
            self.decisions[decision_step(event.step or event.reason)] += 1
        elif isinstance(event, Dropped):
            self.dropped[event.reason] += 1
        elif isinstance(event, Refused):
            self.refused[str(event.status)] += 1
        elif isinstance(event, Shed):
            self.shed[event.cause] += 1
        elif isinstance(event, FailedOver):
            self.failovers[(event.from_hop.hostport(), event.to_hop.hostport())] += 1
        elif isinstance(event, TimedOut):
            self.answered[(str(event.status), f"timer {event.timer}")] += 1
        elif isinstance(event, Answered):
            self.answered[(str(event.status), event.cause)] += 1
        elif isinstance(event, TrunkProbed):
            status = "none" if event.status is None else str(event.status)
            self.probes[(event.trunk.hostport(), status)] += 1
            self.trunk_up.setdefault(event.trunk.hostport(), True)
        elif isinstance(event, TrunkStateChanged):
            self.trunk_up[event.trunk.hostport()] = event.up

    def set_gauge(self, name: str, documentation: str, value: float) -> None:
        self.gauges.set(name, documentation, value)

    def collect(self) -> Iterator[Any]:
        yield _counter(
            "callerid_proxy_caller_id_decisions", "Caller-ID decisions by step", ["step"],
            self.decisions,
        )
        yield _counter(
            "callerid_proxy_requests", "Requests forwarded statefully, by side and next hop",
            ["side", "destination", "method"],
            _relabelled(self.requests, lambda key: (key[0], key[1].hostport(), key[2])),
        )
        yield _counter(
            "callerid_proxy_responses",
            "Responses relayed along transactions, by class and the hop (trunk) that sent them",
            ["method", "class", "hop"],
            _relabelled(self.responses, lambda key: (key[0], f"{key[1]}xx", key[2].hostport())),
        )
        yield _counter(
            "callerid_proxy_failovers", "Failovers to the next trunk", ["from", "to"],
            self.failovers,
        )
        yield _counter("callerid_proxy_dropped", "Messages dropped, by reason", ["reason"],
                       self.dropped)
        yield _counter("callerid_proxy_refused", "Requests refused, by status", ["status"],
                       self.refused)
        yield _counter("callerid_proxy_shed", "New INVITEs shed with 503 (overload)", ["cause"],
                       self.shed)
        yield _counter(
            "callerid_proxy_answered_by_proxy",
            "Final answers the proxy made itself (timeouts, unreachable, too large)",
            ["status", "cause"], self.answered,
        )
        yield _counter(
            "callerid_proxy_trunk_probes", "OPTIONS keepalive results by trunk and status",
            ["trunk", "status"], self.probes,
        )
        up = GaugeMetricFamily("callerid_proxy_trunk_up", "1 while a probed trunk is up",
                               labels=["trunk"])
        for trunk, is_up in sorted(self.trunk_up.items()):
            up.add_metric([trunk], 1 if is_up else 0)
        yield up
        yield self.first_response.family(
            "callerid_proxy_invite_first_response_seconds", "INVITE to first response relayed"
        )
        yield self.final_response.family(
            "callerid_proxy_invite_final_response_seconds", "INVITE to final response relayed"
        )
        for name, (documentation, value) in self.gauges.items():
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], value)
            yield gauge


def _counter(
    name: str, documentation: str, labels: list[str], counts: Counts[Any]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, count in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], count)
    return family


def _relabelled(
    counts: Counts[K], labels_of: Callable[[K], tuple[str, ...]]
) -> Counts[tuple[str, ...]]:
    """The counts by their labels (at scrape time): keys that print the same add up (two hops
    that differ only in transport show one `host:port`)."""
    relabelled: Counts[tuple[str, ...]] = Counts()
    for key, count in counts.items():
        relabelled[labels_of(key)] += count
    return relabelled


def decision_step(step: str) -> str:
    """The metric label of a decision's step: `step 2` (or a reason `step 2: advanced rule #1
    ...`) -> "2"; `emergency`, `local presence` -> "emergency", "local_presence"."""
    head = step.split(":", 1)[0].strip()
    if head.startswith("step "):
        return head[5:]
    return head.replace(" ", "_") if head in ("emergency", "local presence") else "other"


class EventLog:
    """Log lines for the events that deserve one; each formatted only when its level is on.

    The audit line goes straight to the output handler when it can (proxy/logs.py
    `LineHandler.write_direct`: the same text, no LogRecord), which keeps it until `flush` (the
    server's loop tick and stop), its next record or exit: a process killed outright loses at
    most one tick of audit lines."""

    def __init__(self) -> None:
        self._pending: logs.LineHandler | None = None  # holds direct lines since the last flush

    def flush(self) -> None:
        """Write the audit lines kept since the last flush."""
        handler, self._pending = self._pending, None
        if handler is not None:
            handler.write_pending()

    def handle(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, (Forwarded, ResponseRelayed, TrunkProbed)):
                continue  # per message: metrics only
            if isinstance(event, TrunkStateChanged):
                if transactions_log.isEnabledFor(logging.WARNING):
                    transactions_log.warning(
                        "trunk %s is %s", event.trunk.hostport(),
                        "up again" if event.up else "down (keepalives unanswered)",
                        extra=_extra("trunk_state", trunk=event.trunk.hostport()),
                    )
                continue
            if isinstance(event, CallerIdDecided):
                self._decided(event)
            elif isinstance(event, Refused):
                if core_log.isEnabledFor(logging.WARNING):
                    core_log.warning(
                        "refused %s from %s:%s with %d: %s", event.method, event.source.host,
                        event.source.port, event.status, event.reason,
                        extra=_extra("refused", status=event.status, source=_where(event.source)),
                    )
            elif isinstance(event, Dropped):
                if core_log.isEnabledFor(logging.WARNING):
                    core_log.warning(
                        "dropped: %s", event.detail or event.reason,
                        extra=_extra("dropped", reason=event.reason, source=_where(event.source)),
                    )
            elif isinstance(event, Shed):
                if core_log.isEnabledFor(logging.DEBUG):  # a flood: metrics and a state line
                    core_log.debug("shed INVITE from %s (%s)", _where(event.source), event.cause,
                                   extra=_extra("shed", status=503))
            else:
                self._transaction_event(event)

    def _decided(self, event: CallerIdDecided) -> None:
        """The audit line."""
        if not core_log.isEnabledFor(logging.INFO):
            return
        args = (
            event.call_id, event.user, event.destination, event.number, event.step,
            "id" if event.privacy else "none", event.reason, event.rules_version,
        )  # fmt: skip
        fields = {
            "event": AUDIT_EVENT, "call_id": event.call_id, "user": event.user,
            "destination": event.destination, "shown": event.number,
            "rule": decision_step(event.step or event.reason),
            "rules_version": event.rules_version, "trunk": event.trunk.hostport(),
        }  # fmt: skip
        handler = logs.direct_handler(core_log, logging.INFO)
        if handler is None or not handler.write_direct(
            core_log.name, logging.INFO, AUDIT_LINE, args, fields,
        ):
            core_log.info(AUDIT_LINE, *args, extra=fields)
        elif handler is not self._pending:
            self.flush()
            self._pending = handler

    @staticmethod
    def _transaction_event(event: Event) -> None:
        if not transactions_log.isEnabledFor(logging.WARNING):
            return
        if isinstance(event, FailedOver):
            transactions_log.warning(
                "%s: %s failed (%s), trying %s", event.method, event.from_hop.hostport(),
                event.cause, event.to_hop.hostport(),
                extra=_extra("failed_over", trunk=event.to_hop.hostport(), status=event.status),
            )
        elif isinstance(event, (TimedOut, Answered)):
            cause = f"timer {event.timer}" if isinstance(event, TimedOut) else event.cause.lower()
            transactions_log.warning(
                "%s %s toward %s: answering %d", event.method, cause,
                event.destination.hostport(), event.status,
                extra=_extra(
                    "timed_out" if isinstance(event, TimedOut) else "answered",
                    destination=event.destination.hostport(), status=event.status,
                ),
            )


def _where(source: Source | None) -> str:
    return f"{source.host}:{source.port}" if source is not None else "-"


def _extra(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **fields}

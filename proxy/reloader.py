"""Rules reloads that never stall SIP: parsed in a worker thread, swapped in on the loop.

`rules.load` is pure (a file in, an immutable object out), so it runs in the loop's default
executor; only the reference swap and the status write happen on the loop. Reloads are
serialised by an asyncio.Lock, and requests coalesce: a SIGHUP (or POST /reload) arriving while a
reload runs schedules at most one more, which reads the file as it is when it starts, so spam
costs at most two parses however many signals arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import rules
from proxy.active_rules import ActiveRules, ReloadOutcome

log = logging.getLogger("callerid_proxy.rules")

Loaded = rules.Rules | ReloadOutcome  # the fresh rules, or the refusal


def _load_off_loop(active: ActiveRules) -> Loaded:
    """Runs in a worker thread: no logging of the outcome here, only the parse."""
    try:
        return rules.load(active.path)
    except rules.RulesError as error:
        return ReloadOutcome(False, None, tuple(error.errors))
    except OSError as error:
        return ReloadOutcome(False, None, (f"{active.path}: {error}",))
    except Exception as error:  # a loader bug must not end the reload task
        return ReloadOutcome(False, None, (f"{active.path}: {type(error).__name__}: {error}",))


def _install(active: ActiveRules, loaded: Loaded) -> ReloadOutcome:
    """On the loop: log the outcome and, when the file validated, swap the reference."""
    if isinstance(loaded, ReloadOutcome):
        for line in loaded.errors:
            log.error("rules reload refused: %s", line)
        log.error("rules reload refused; version %s stays active", active.current.version)
        return loaded
    for warning in loaded.warnings:
        log.warning("rules: %s", warning)
    previous = active.install(loaded)
    log.info("rules reloaded: version %s -> %s", previous.version, loaded.version)
    return ReloadOutcome(True, loaded.version, ())


class Reloader:
    """`request()` from a signal handler, `reload()` from the admin endpoint; `on_done` is
    called on the loop with every outcome (the server counts it and writes its status)."""

    def __init__(self, active: ActiveRules, on_done: Callable[[ReloadOutcome], None]) -> None:
        self._active = active
        self._on_done = on_done
        self._lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._running: asyncio.Task[ReloadOutcome] | None = None
        self._queued: asyncio.Task[ReloadOutcome] | None = None
        self.started = 0  # parses begun: the coalescing is visible in tests and /status

    def request(self) -> None:
        """Fire and forget (SIGHUP)."""
        self._schedule()

    async def reload(self) -> ReloadOutcome:
        """The outcome of a reload that starts after this call (POST /reload)."""
        return await asyncio.shield(self._schedule())

    def _schedule(self) -> asyncio.Task[ReloadOutcome]:
        if self._running is None or self._running.done():
            self._running = self._loop.create_task(self._run())
            return self._running
        # One in progress: it may have read the file already, so one more follows it; every
        # request made meanwhile shares that one.
        if self._queued is None or self._queued.done():
            self._queued = self._loop.create_task(self._run_after(self._running))
        return self._queued

    async def _run_after(self, previous: asyncio.Task[ReloadOutcome]) -> ReloadOutcome:
        await asyncio.wait([previous])
        self._running, self._queued = self._queued, None
        return await self._run()

    async def _run(self) -> ReloadOutcome:
        async with self._lock:
            self.started += 1
            loaded = await self._loop.run_in_executor(None, _load_off_loop, self._active)
            outcome = _install(self._active, loaded)
            self._on_done(outcome)
            return outcome

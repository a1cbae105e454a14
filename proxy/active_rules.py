"""The one atomically swapped reference: the rules in force. Reload builds a whole new immutable
rules object and swaps the reference; a call already decided keeps its decision (it rides in the
dialog), and a file that does not validate leaves the old rules in force."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import rules
from proxy.sip.policy import CallerIdDecision

log = logging.getLogger("callerid_proxy.rules")


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    version: str | None
    errors: tuple[str, ...]


class ActiveRules:
    """The core's CallerIdPolicy, on whatever rules are current at the instant of a call."""

    def __init__(self, path: Path, initial: rules.Rules) -> None:
        self.path = path
        self.current = initial

    @classmethod
    def load(cls, path: Path) -> ActiveRules:
        loaded = rules.load(path)
        for warning in loaded.warnings:
            log.warning("rules: %s", warning)
        return cls(path, loaded)

    def decide(self, user: str, destination: str) -> CallerIdDecision:
        current = self.current  # read once: the whole decision uses one rules object
        decision = rules.resolve(current, user, destination)
        return CallerIdDecision(decision.number, decision.name, decision.reason, current.version)

    def reload(self) -> ReloadOutcome:
        try:
            fresh = rules.load(self.path)
        except rules.RulesError as error:
            for line in error.errors:
                log.error("rules reload refused: %s", line)
            log.error("rules reload refused; version %s stays active", self.current.version)
            return ReloadOutcome(False, None, tuple(error.errors))
        except OSError as error:
            log.error("rules reload refused: cannot read %s: %s", self.path, error)
            return ReloadOutcome(False, None, (f"{self.path}: {error}",))
        for warning in fresh.warnings:
            log.warning("rules: %s", warning)
        previous, self.current = self.current, fresh
        log.info("rules reloaded: version %s -> %s", previous.version, fresh.version)
        return ReloadOutcome(True, fresh.version, ())

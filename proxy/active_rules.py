"""The one atomically swapped reference: the rules in force. Reload builds a whole new immutable
rules object and swaps the reference; a call already decided keeps its decision (it rides in the
dialog), and a file that does not validate leaves the old rules in force."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import rules
from proxy.sip.policy import CallerIdDecision, CallFacts, PlainCall, TrunkIdentity

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
        self._state = _State.of(initial)

    @property
    def current(self) -> rules.Rules:
        return self._state.loaded

    @classmethod
    def load(cls, path: Path) -> ActiveRules:
        loaded = rules.load(path)
        for warning in loaded.warnings:
            log.warning("rules: %s", warning)
        return cls(path, loaded)

    def decide(self, user: str, destination: str) -> CallerIdDecision:
        """The decision for a call whose user is `user` (as if found in From)."""
        return self.decide_call(PlainCall(user, destination))

    def decide_call(self, call: CallFacts) -> CallerIdDecision:
        state = self._state  # read once: the whole decision uses one rules object
        current = state.loaded
        user, place = rules.find_user(current, call.user_at)
        decision = rules.resolve(
            current,
            user,
            call.destination,
            privacy_requested=call.privacy_requested,
            found_in=place if current.user_source != ("from",) else None,
            pbx_name=call.display_name if current.keep_pbx_display_name else None,
        )
        trunks, other = state.identities.get(decision.number, (_NO_TRUNKS, None))
        return CallerIdDecision(
            decision.number,
            decision.name,
            decision.reason,
            current.version,
            step=decision.step,
            privacy=decision.privacy is not None,
            user=user,
            trunks=trunks,
            other_trunks=other,
        )

    def install(self, loaded: rules.Rules) -> rules.Rules:
        """Swap in rules validated elsewhere (the reloader parses off the loop); one reference
        assignment, so a call sees either the old rules or the new ones. Returns the old."""
        previous, self._state = self.current, _State.of(loaded)
        return previous

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
        previous, self._state = self.current, _State.of(fresh)
        log.info("rules reloaded: version %s -> %s", previous.version, fresh.version)
        return ReloadOutcome(True, fresh.version, ())


_NO_TRUNKS: Mapping[int, TrunkIdentity] = MappingProxyType({})
Identities = tuple[Mapping[int, TrunkIdentity], TrunkIdentity | None]


@dataclass(frozen=True, slots=True)
class _State:
    """The rules and, per owned number, how each configured trunk writes it: built once per
    load so a call only looks them up."""

    loaded: rules.Rules
    identities: Mapping[str, Identities]

    @classmethod
    def of(cls, loaded: rules.Rules) -> _State:
        numbers = (entry.number for entry in loaded.numbers)
        return cls(loaded, {number: _identities(loaded, number) for number in numbers})


def _identities(loaded: rules.Rules, number: str) -> Identities:
    def identity(trunk: rules.TrunkFormat) -> TrunkIdentity:
        user = loaded.formatted[number][trunk.number_format]
        if trunk.host == rules.HOST_PBX:
            return TrunkIdentity(user, None, keep_pbx_host=True)
        return TrunkIdentity(user, None if trunk.host == rules.HOST_TRUNK else trunk.host)

    # Trunk positions in the file count from 1, as the `trunk` setting lists them; the core's
    # trunk index counts from 0.
    trunks = {position - 1: identity(t) for position, t in loaded.trunk_formats.items()}
    return MappingProxyType(trunks), identity(loaded.default_trunk)

"""Trunk availability from OPTIONS keepalive probes (issue 8; like Kamailio's dispatcher): a trunk
is down after `failures` probes in a row got no answer (or 408/5xx), up again after `successes`
answered ones. Down trunks are skipped by new calls; with every trunk down the PBX gets 503 at
once. Plain data: the core sends the probes and feeds the results in."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.sip.addresses import Target


@dataclass(slots=True)
class TrunkState:
    target: Target
    up: bool = True
    failures: int = 0  # probes failed in a row
    successes: int = 0  # probes answered in a row
    last_status: int | None = None  # the last probe's answer; None: none (timeout, unreachable)
    probes: int = 0


def probe_answered(status: int | None) -> bool:
    """Any answer shows the trunk alive, but 408 and 5xx (it cannot take calls now)."""
    return status is not None and status != 408 and status < 500


class TrunkHealth:
    def __init__(self, trunks: tuple[Target, ...], failures: int, successes: int) -> None:
        self.states = [TrunkState(target) for target in trunks]
        self._failures = failures
        self._successes = successes

    def record(self, index: int, status: int | None) -> bool | None:
        """One probe result; the trunk's new up/down state when it changed, else None."""
        state = self.states[index]
        state.probes += 1
        state.last_status = status
        if probe_answered(status):
            state.failures = 0
            state.successes += 1
            if not state.up and state.successes >= self._successes:
                state.up = True
                return True
        else:
            state.successes = 0
            state.failures += 1
            if state.up and state.failures >= self._failures:
                state.up = False
                return False
        return None

    def up(self) -> list[Target]:
        return [state.target for state in self.states if state.up]


def probe_request(
    trunk: Target, ours: Target, branch: str, sequence: int, instance: str
) -> bytes:
    """An out-of-dialog OPTIONS to the trunk (RFC 3261 11): it answers with its capabilities,
    which shows it alive; nothing else is asked of it. `instance`: random per core, so that
    the Call-ID and the From tag of a restarted proxy's probes are new ones (RFC 3261 8.1.1.4:
    unique over time; 19.3: tags random)."""
    host = ours.uri_host()
    return (
        f"OPTIONS sip:{trunk.hostport()} SIP/2.0\r\n"
        f"Via: SIP/2.0/{ours.transport.upper()} {ours.hostport()};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:keepalive@{host}>;tag=cp{instance}{sequence:x}\r\n"
        f"To: <sip:{trunk.hostport()}>\r\n"
        f"Call-ID: keepalive-{instance}-{sequence}@{host}\r\n"
        f"CSeq: {sequence} OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()

"""Where a message came from decides its direction: the trunk, the PBX (or a trusted source),
or nobody we talk to. No open relay: only these two sides are ever served."""

from __future__ import annotations

import ipaddress

from proxy.sip.addresses import STREAM_TRANSPORTS, Source
from proxy.sip.policy import PBX_SIDE, TRUNK_SIDE, ProxyConfig


def side_of(config: ProxyConfig, source: Source) -> str | None:
    """Trunk first: PBX and trunk may share an IP address."""
    dialled = source.dialled
    if dialled is not None and config.is_trunk(dialled.host, dialled.port):
        return TRUNK_SIDE
    if config.is_trunk(source.host, source.port):
        return TRUNK_SIDE
    if dialled == config.pbx or source.host == config.pbx.host:
        return PBX_SIDE
    if config.trusted:
        address = ipaddress.ip_address(source.host)
        if any(address in network for network in config.trusted):
            return PBX_SIDE
    if source.transport in STREAM_TRANSPORTS and any(t.host == source.host for t in config.trunks):
        return TRUNK_SIDE  # a trunk's own connection, from an ephemeral port
    return None


def trunk_index_of(config: ProxyConfig, source: Source) -> int:
    """Which `--trunk` a message from the trunk side came from (its dialog stays there)."""
    trunks = config.trunks
    for index, trunk in enumerate(trunks):
        if source.dialled == trunk or (trunk.host, trunk.port) == (source.host, source.port):
            return index
    return next((i for i, t in enumerate(trunks) if t.host == source.host), 0)

"""A new INVITE the `--workers` dispatcher sends ahead of its backlog, flagged "shed"
(proxy/dispatch_loop.py): the worker answers it 503 at once, but still judges it as always: a
retransmission of an INVITE it admitted gets its transaction's answer, an outsider's is refused,
and the worker's own shedding state is left as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.bench_calls import PBX, invite
from bench.bench_glue import CountingTransport, make_server
from proxy.server import ProxyServer
from proxy.sip.addresses import Source

OUTSIDER = Source("udp", "192.0.2.66", 5060)


def start_lines(transport: CountingTransport) -> list[bytes]:
    return [data.split(b"\r\n", 1)[0] for data in transport.sent]


async def _flagged(directory: Path) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
    server: ProxyServer
    server, transport = make_server(directory)
    server.on_shed_by_dispatcher(invite(1), PBX)
    shed = start_lines(transport)
    transport.sent.clear()
    server.on_message(invite(2), PBX)  # the worker itself is not shedding: admitted
    server.on_shed_by_dispatcher(invite(2), PBX)  # its retransmission, flagged
    admitted = start_lines(transport)
    transport.sent.clear()
    server.on_shed_by_dispatcher(invite(3), OUTSIDER)
    outsider = start_lines(transport)
    transport.sent.clear()
    server.on_message(invite(4), PBX)
    after = start_lines(transport)
    if server._timer is not None:
        server._timer.cancel()
    assert server.core.counters["shed"] == 1
    return shed, admitted, outsider, after


def test_a_flagged_invite_is_shed_unless_admitted_or_untrusted(tmp_path: Path) -> None:
    shed, admitted, outsider, after = asyncio.run(_flagged(tmp_path))
    assert shed == [b"SIP/2.0 503 Service Unavailable"]
    # admitted: 100 Trying and the INVITE to the trunk, then the retransmission's 100 again
    assert admitted.count(b"SIP/2.0 100 Trying") == 2
    assert not any(line.startswith(b"SIP/2.0 503") for line in admitted)
    assert not any(line.startswith(b"SIP/2.0 503") for line in outsider)  # 403 or nothing
    assert b"SIP/2.0 100 Trying" in after  # the next unflagged INVITE is admitted

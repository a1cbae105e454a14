"""A source that is neither the PBX, the trunk nor trusted gets 403 and reaches nothing."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.conftest import StartProxy
from tests.e2e.ports import free_port
from tests.e2e.sipp import SippSide, assert_all_succeeded, run_client

UNTRUSTED_HOST = "127.0.0.2"  # loopback, but not the PBX's address (127.0.0.1)
RECEIVE_TIMEOUT_S = 10.0


def invite_from_the_pbx(call_id: str, pbx_port: int, proxy_port: int) -> bytes:
    """A minimal outbound INVITE, as the PBX (127.0.0.1) would send it."""
    lines = [
        f"INVITE sip:00442079460000@127.0.0.1:{proxy_port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{pbx_port};branch=z9hG4bK-barrier-{pbx_port};rport",
        "Max-Forwards: 70",
        "From: <sip:1001@127.0.0.1>;tag=barrier",
        f"To: <sip:00442079460000@127.0.0.1:{proxy_port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:1001@127.0.0.1:{pbx_port}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def call_id_of(datagram: bytes) -> str:
    for line in datagram.decode(errors="replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i"):
            return value.strip()
    return ""


def test_untrusted_source_gets_403_and_nothing_reaches_the_trunk(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = start_proxy()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx,
    ):
        trunk.bind((proxy.trunk.host, proxy.trunk.port))
        trunk.settimeout(RECEIVE_TIMEOUT_S)
        stranger = SippSide(
            name="untrusted",
            scenario="untrusted_uac_403.xml",
            host=UNTRUSTED_HOST,
            port=free_port(UNTRUSTED_HOST),
            remote=proxy.listen.address(),
            variables={"pbx_user": "1001", "destination": "00442079460000"},
        )
        assert_all_succeeded([run_client(stranger, tmp_path)], calls=1, context=proxy.log_tail())

        # Barrier: a call from the PBX sent after the stranger's has finished. The proxy handles
        # datagrams in order, so if the stranger's INVITE or ACK had been forwarded it would reach
        # the trunk before this one.
        pbx.bind(("127.0.0.1", 0))
        barrier = "barrier-after-untrusted@127.0.0.1"
        pbx.sendto(
            invite_from_the_pbx(barrier, pbx.getsockname()[1], proxy.listen.port),
            (proxy.listen.host, proxy.listen.port),
        )
        first, _ = trunk.recvfrom(65536)
    assert call_id_of(first) == barrier, (
        f"the trunk received something before the PBX's call:\n{first.decode(errors='replace')}\n"
        f"{proxy.log_tail()}"
    )

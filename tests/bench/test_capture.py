"""Timing the PBX leg on the loopback interface: the per-call bookkeeping, and the BPF filter
on real datagrams (when this process may open a packet socket)."""

from __future__ import annotations

import socket
import time

import pytest

from bench import capture
from tests.e2e.ports import free_port

INVITE = b"INVITE sip:1@h SIP/2.0\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\n\r\n"
RESPONSE = b"SIP/2.0 %s\r\nCall-ID: %s\r\nCSeq: %s\r\n\r\n"


def test_first_invite_first_100_and_the_200_to_the_invite_count() -> None:
    leg = capture.packets([
        (10.000, INVITE % b"a"),
        (10.500, INVITE % b"a"),  # a retransmission: the first INVITE counts
        (10.002, RESPONSE % (b"100 Trying", b"a", b"1 INVITE")),
        (10.600, RESPONSE % (b"100 Trying", b"a", b"1 INVITE")),
        (10.010, RESPONSE % (b"200 OK", b"a", b"1 INVITE")),
        (10.200, RESPONSE % (b"200 OK", b"a", b"2 BYE")),  # the BYE's 200 is not the call's
        (20.000, INVITE % b"b"),  # no answer: no latency
        (30.000, RESPONSE % (b"200 OK", b"c", b"1 INVITE")),  # no INVITE seen: ignored
        (40.000, b"SIP/2.0 100 Trying\r\n\r\n"),  # no Call-ID
    ])  # fmt: skip
    ms = leg.milliseconds()
    assert ms["invite_100"] == [pytest.approx(2.0)]
    assert ms["invite_200"] == [pytest.approx(10.0)]


def test_a_shed_call_times_its_first_503() -> None:
    leg = capture.packets([
        (10.000, INVITE % b"shed"),
        (10.004, RESPONSE % (b"503 Service Unavailable", b"shed", b"1 INVITE")),
        (10.600, RESPONSE % (b"503 Service Unavailable", b"shed", b"1 INVITE")),
        (11.000, INVITE % b"ok"),
        (11.001, RESPONSE % (b"100 Trying", b"ok", b"1 INVITE")),
    ])  # fmt: skip
    ms = leg.milliseconds()
    assert ms["invite_503"] == [pytest.approx(4.0)]
    assert ms["invite_100"] == [pytest.approx(1.0)] and ms["invite_200"] == []


def test_compact_call_id_header() -> None:
    leg = capture.packets([
        (1.0, b"INVITE sip:1@h SIP/2.0\r\ni: x\r\nCSeq: 1 INVITE\r\n\r\n"),
        (1.001, b"SIP/2.0 100 Trying\r\ni: x\r\ncseq: 1 invite\r\n\r\n"),
    ])  # fmt: skip
    assert leg.milliseconds()["invite_100"] == [pytest.approx(1.0)]


def test_bpf_jumps_stay_inside_the_program() -> None:
    program = capture.bpf_program(5060)
    for index, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert index + 1 + max(jt, jf) < len(program)
    assert program[-1] == (0x06, 0, 0, 0xFFFF)


@pytest.mark.skipif(not capture.available(), reason="needs CAP_NET_RAW for a packet socket")
def test_live_capture_keeps_only_the_pbx_legs_invite_100_and_200() -> None:
    port, peer, stranger = free_port(), free_port(), free_port()
    recorder = capture.LoopbackCapture(port)
    recorder.start()
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        pbx.bind(("127.0.0.1", port))
        other.bind(("127.0.0.1", peer))
        pbx.sendto(INVITE % b"live", ("127.0.0.1", peer))
        time.sleep(0.002)
        other.sendto(RESPONSE % (b"100 Trying", b"live", b"1 INVITE"), ("127.0.0.1", port))
        other.sendto(RESPONSE % (b"180 Ringing", b"live", b"1 INVITE"), ("127.0.0.1", port))
        time.sleep(0.003)
        other.sendto(RESPONSE % (b"200 OK", b"live", b"1 INVITE"), ("127.0.0.1", port))
        pbx.sendto(INVITE % b"shed", ("127.0.0.1", peer))
        other.sendto(RESPONSE % (b"503 Service Unavailable", b"shed", b"1 INVITE"),
                     ("127.0.0.1", port))  # fmt: skip
        other.sendto(RESPONSE % (b"486 Busy Here", b"shed", b"1 INVITE"), ("127.0.0.1", port))
        other.sendto(INVITE % b"elsewhere", ("127.0.0.1", stranger))  # not the PBX's port
        time.sleep(0.2)
    finally:
        leg = recorder.stop()
        pbx.close()
        other.close()
    assert set(leg.calls) == {b"live", b"shed"}
    assert leg.calls[b"shed"].unavailable is not None and leg.calls[b"shed"].ok is None
    ms = leg.milliseconds()
    assert 2.0 <= ms["invite_100"][0] < 100.0
    assert ms["invite_200"][0] >= ms["invite_100"][0] + 3.0

"""Sub-millisecond INVITE->100, INVITE->200 and INVITE->503 (overload shedding) latencies of
the PBX leg, from the loopback interface (SIPp's own timers tick in 4 ms steps).

A packet socket on `lo` with a classic BPF filter keeps, of the UDP datagrams to or from the PBX
SIPp's port, only INVITEs and "SIP/2.0 100"/"SIP/2.0 200"/"SIP/2.0 503" responses, once each
(the copy the interface receives, not the one it sends); the kernel timestamps each one
(SO_TIMESTAMPNS), so a late reader does not skew the figures. Needs CAP_NET_RAW (root); UDP
over IPv4 only. Costs a few microseconds of Python per captured datagram (about 4 per call).
"""

from __future__ import annotations

import ctypes
import re
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
SKF_AD_PKTTYPE = -0x1000 + 4
PAYLOAD = 14 + 20 + 8  # loopback's Ethernet-like header, IPv4 without options, UDP
RECV_BUFFER = 16 * 1024 * 1024

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
_CSEQ_INVITE = re.compile(rb"\r\ncseq[ \t]*:[ \t]*\d+[ \t]+INVITE\b", re.IGNORECASE)


def _word(text: bytes) -> int:
    return int.from_bytes(text, "big")


def bpf_program(port: int) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) instructions: IPv4 UDP from/to `port`, not outgoing, payload starting
    with "INVI" or "SIP/2.0 100 " / "SIP/2.0 200 " / "SIP/2.0 503 "."""
    ld_h, ld_b, ld_w = 0x28, 0x30, 0x20  # BPF_LD | BPF_ABS | H/B/W
    jeq, jset, ret = 0x15, 0x45, 0x06
    return [
        (ld_h, 0, 0, 12), (jeq, 0, 16, ETH_P_IP),                     # 0-1 IPv4
        (ld_b, 0, 0, 23), (jeq, 0, 14, 17),                           # 2-3 UDP
        (ld_h, 0, 0, 20), (jset, 12, 0, 0x1FFF),                      # 4-5 not a fragment
        (ld_w, 0, 0, SKF_AD_PKTTYPE & 0xFFFFFFFF), (jeq, 10, 0, PACKET_OUTGOING),  # 6-7
        (ld_h, 0, 0, 34), (jeq, 2, 0, port),                          # 8-9 source port
        (ld_h, 0, 0, 36), (jeq, 0, 6, port),                          # 10-11 destination port
        (ld_w, 0, 0, PAYLOAD), (jeq, 6, 0, _word(b"INVI")),           # 12-13
        (ld_w, 0, 0, PAYLOAD + 8), (jeq, 4, 0, _word(b"100 ")),       # 14-15 "SIP/2.0 100 "
        (jeq, 3, 0, _word(b"200 ")),                                  # 16
        (jeq, 2, 0, _word(b"503 ")),                                  # 17
        (ret, 0, 0, 0), (ret, 0, 0, 0),                               # 18-19 drop (19 unused)
        (ret, 0, 0, 0xFFFF),                                          # 20 accept
    ]  # fmt: skip


@dataclass
class CallTimes:
    invite: float | None = None
    trying: float | None = None
    ok: float | None = None
    unavailable: float | None = None  # the first 503 (the proxy shed the call)


@dataclass
class PbxLegLatencies:
    """First INVITE, first 100, first 200 and first 503 (to the INVITE) per Call-ID, in s."""

    calls: dict[bytes, CallTimes] = field(default_factory=dict)

    def add(self, timestamp: float, payload: bytes) -> None:
        found = _CALL_ID.search(payload)
        if found is None:
            return
        times = self.calls.setdefault(found.group(1).strip(), CallTimes())
        if payload.startswith(b"INVITE "):
            times.invite = timestamp if times.invite is None else times.invite
        elif _CSEQ_INVITE.search(payload) is None:
            return  # the 200 to the BYE
        elif payload.startswith(b"SIP/2.0 100 "):
            times.trying = timestamp if times.trying is None else times.trying
        elif payload.startswith(b"SIP/2.0 200 "):
            times.ok = timestamp if times.ok is None else times.ok
        elif payload.startswith(b"SIP/2.0 503 "):
            times.unavailable = timestamp if times.unavailable is None else times.unavailable

    def milliseconds(self) -> dict[str, list[float]]:
        """Per timer name (as the SIPp scenario names them; "invite_503": to the 503 of a shed
        call), every call's latency in ms."""
        out: dict[str, list[float]] = {"invite_100": [], "invite_200": [], "invite_503": []}
        for times in self.calls.values():
            if times.invite is None:
                continue
            ends = (("invite_100", times.trying), ("invite_200", times.ok),
                    ("invite_503", times.unavailable))  # fmt: skip
            for name, end in ends:
                if end is not None:
                    out[name].append((end - times.invite) * 1000)
        return out


def packets(datagrams: Iterable[tuple[float, bytes]]) -> PbxLegLatencies:
    """Latencies from (timestamp, payload) pairs, payloads as the filter keeps them."""
    result = PbxLegLatencies()
    for timestamp, payload in datagrams:
        result.add(timestamp, payload)
    return result


class LoopbackCapture:
    """Captures the PBX leg in a thread between `start()` and `stop()`."""

    def __init__(self, port: int) -> None:
        self.latencies = PbxLegLatencies()
        self.dropped_reads = 0
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        program = b"".join(struct.pack("HBBI", *insn) for insn in bpf_program(port))
        buffer = ctypes.create_string_buffer(program, len(program))  # the kernel copies it
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        self._socket.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self._socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._socket.bind(("lo", 0))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        self._drain()  # what arrived before the filter was attached
        self._thread.start()

    def stop(self) -> PbxLegLatencies:
        self._stop.set()
        self._thread.join(timeout=10)
        self._socket.close()
        return self.latencies

    def _drain(self) -> None:
        self._socket.setblocking(False)
        try:
            while True:
                self._socket.recv(65535)
        except BlockingIOError:
            pass
        self._socket.settimeout(0.2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self._socket.recvmsg(65535, 64)
            except TimeoutError:
                continue
            except OSError:
                self.dropped_reads += 1
                continue
            self.latencies.add(_timestamp(ancillary), data[PAYLOAD:])


def _timestamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return float(seconds) + float(nanoseconds) / 1e9
    raise OSError("no kernel timestamp on a captured packet")


def available() -> bool:
    """Whether this process may open a packet socket (CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP)).close()
    except (OSError, AttributeError):
        return False
    return True

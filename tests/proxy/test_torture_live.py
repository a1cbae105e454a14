"""All 49 RFC 4475 torture messages through the real `callerid-proxy run` process, over UDP and over
TCP, with plain sockets playing the PBX and the trunk on free loopback ports.

Each step sends one torture message from the PBX (responses: from the trunk, answering a request the
PBX sent through the proxy), then a probe INVITE on the same path. The proxy handles one socket's
input in order, so everything the torture message caused arrives before the probe's traces (the
forwarded probe at the trunk, its 100 Trying at the PBX): "nothing forwarded / nothing answered" is
checked without sleeping, and the probe shows that the proxy still works. All waits are bounded.
"""

from __future__ import annotations

import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.active_rules import ActiveRules
from proxy.sip.errors import SipError
from proxy.sip.framing import StreamFramer
from proxy.sip.parse import parse_message
from proxy.sip.requests import uri_user
from proxy.sip.transactions import server_key
from tests.proxy.sip.support import invite
from tests.proxy.sip.test_parser import SAMPLES
from tests.proxy.sip.torture_support import (
    EXPECTED,
    NAMES,
    STREAM_EXPECTED,
    Kind,
    call_id_of,
    check_forwarded,
    check_reply,
    load,
    request_for,
    start_line,
    status_of,
    via_lines,
    with_vias,
    without_top_via,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "example.yaml"
HOST = "127.0.0.1"
IDLE_TIMEOUT = 1.0
WAIT = 5.0  # bound on any single wait for something that must arrive


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


# ----------------------------------------------------------------------------- test peers
class Peer:
    """A PBX or trunk played by the test. `inbox` gets every message received, in order."""

    transport = "udp"

    def __init__(self) -> None:
        self.inbox: list[bytes] = []

    def sockets(self) -> list[socket.socket]:
        raise NotImplementedError

    def on_readable(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def via(self, branch: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


class UdpPeer(Peer):
    def __init__(self, port: int, proxy_port: int) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))
        self.port = port
        self.proxy = (HOST, proxy_port)

    def sockets(self) -> list[socket.socket]:
        return [self.sock]

    def on_readable(self, sock: socket.socket) -> None:
        data, _ = sock.recvfrom(70000)
        self.inbox.append(data)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.proxy)

    def via(self, branch: str) -> bytes:
        return f"Via: SIP/2.0/UDP {HOST}:{self.port};branch={branch};rport\r\n".encode()


@dataclass
class Stream:
    sock: socket.socket
    framer: StreamFramer = field(default_factory=StreamFramer)
    closed_at: float | None = None


class TcpPeer(Peer):
    """The PBX (connects to the proxy) or the trunk (listens; the proxy connects to it)."""

    transport = "tcp"

    def __init__(self, *, proxy_port: int | None = None, listen_port: int | None = None) -> None:
        super().__init__()
        self.proxy_port = proxy_port
        self.listener: socket.socket | None = None
        if listen_port is not None:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((HOST, listen_port))
            self.listener.listen(8)
        self.streams: list[Stream] = []

    def connect(self) -> Stream:
        assert self.proxy_port is not None
        sock = socket.create_connection((HOST, self.proxy_port), timeout=WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.streams.append(Stream(sock))
        return self.streams[-1]

    def sockets(self) -> list[socket.socket]:
        live = [s.sock for s in self.streams if s.closed_at is None]
        return live + ([self.listener] if self.listener is not None else [])

    def on_readable(self, sock: socket.socket) -> None:
        if sock is self.listener:
            accepted, _ = sock.accept()
            self.streams.append(Stream(accepted))
            return
        stream = next(s for s in self.streams if s.sock is sock)
        try:
            data = sock.recv(70000)
        except ConnectionResetError:
            data = b""
        if not data:
            stream.closed_at = time.monotonic()
            sock.close()
            return
        for frame in stream.framer.feed(data):
            assert not frame.fatal, f"the proxy sent an unframeable stream: {frame.reason}"
            self.inbox.append(frame.data)

    def live_stream(self) -> Stream:
        """The newest open connection; the PBX opens a new one if there is none."""
        live = [stream for stream in self.streams if stream.closed_at is None]
        if live:
            return live[-1]
        assert self.proxy_port is not None, "no open connection from the proxy"
        return self.connect()

    def send(self, data: bytes) -> None:
        self.live_stream().sock.sendall(data)

    def via(self, branch: str) -> bytes:
        port = self.live_stream().sock.getsockname()[1]
        return f"Via: SIP/2.0/TCP {HOST}:{port};branch={branch};rport\r\n".encode()

    def close(self) -> None:
        for stream in self.streams:
            if stream.closed_at is None:
                stream.sock.close()
        if self.listener is not None:
            self.listener.close()


# ----------------------------------------------------------------------------- the proxy process
@dataclass
class Live:
    transport: str
    process: subprocess.Popen[bytes]
    proxy_port: int
    pbx: Peer
    trunk: Peer
    log: Path
    rules: ActiveRules
    stale_call_ids: set[bytes] = field(default_factory=set)
    probes: int = 0

    def pump(self, timeout: float) -> None:
        """Read whatever arrives within `timeout` (or less, once nothing is pending)."""
        peers = {sock: peer for peer in (self.pbx, self.trunk) for sock in peer.sockets()}
        readable, _, _ = select.select(list(peers), [], [], timeout)
        for sock in readable:
            peers[sock].on_readable(sock)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; log:\n{self.log_tail()}")
            assert self.process.poll() is None, f"proxy died; log:\n{self.log_tail()}"
            self.pump(min(remaining, 0.1))

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def arrived(self, peer: Peer, call_id: bytes) -> list[bytes]:
        return [data for data in peer.inbox if call_id_of(data) == call_id]

    def take(self, peer: Peer) -> list[bytes]:
        """What `peer` received in this step: stale transactions' retransmissions left out."""
        fresh = [data for data in peer.inbox if call_id_of(data) not in self.stale_call_ids]
        peer.inbox.clear()
        unique: list[bytes] = []
        for data in fresh:
            if data not in unique:  # a UDP retransmission of the very same bytes
                unique.append(data)
        return unique

    def expected_number(self, request: bytes) -> str:
        msg = parse_message(request, datagram=True)
        decision = self.rules.decide(uri_user(msg.from_addr.uri), uri_user(msg.wire.uri))
        return decision.number

    def probe(self) -> None:
        """A valid outbound INVITE on the PBX's path: forwarded, rewritten, answered 100."""
        self.probes += 1
        call_id = f"probe-{self.transport}-{self.probes}@pbx"
        request = invite(call_id=call_id, branch=f"z9hG4bK-probe-{self.probes}", to="025551234")
        request = request.replace(b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=", b"\r\n", 1)
        head, rest = request.split(b"\r\n", 1)
        branch = rest.split(b"\r\n", 1)[0].split(b";", 1)[0]
        via = self.pbx.via(branch.decode())
        request = head + b"\r\n" + via + rest.split(b"\r\n", 1)[1]
        self.pbx.send(request)
        key = call_id.encode()
        self.wait(lambda: bool(self.arrived(self.trunk, key)), f"probe {call_id} at the trunk")
        self.wait(lambda: bool(self.arrived(self.pbx, key)), f"100 Trying for {call_id}")
        forwarded = self.arrived(self.trunk, key)[0]
        assert [status_of(data) for data in self.arrived(self.pbx, key)][:1] == [100]
        check_forwarded(request, forwarded, rewritten_identity=True, number="+3228880001")

    def probe_from_trunk(self) -> None:
        """An OPTIONS with Max-Forwards 0 on the trunk's own path, which the proxy answers 483
        itself: once the 483 is back, everything the trunk sent before it on that socket or
        connection has been handled. Over TCP the PBX's probe alone cannot say so: two
        connections have no order between them."""
        self.probes += 1
        call_id = f"trunk-probe-{self.transport}-{self.probes}@trunk"
        request = (
            f"OPTIONS sip:probe@{HOST}:{self.proxy_port} SIP/2.0\r\n".encode()
            + self.trunk.via(f"z9hG4bK-tprobe-{self.probes}")
            + (
                f"Max-Forwards: 0\r\nFrom: <sip:trunk@{HOST}>;tag=tp{self.probes}\r\n"
                f"To: <sip:probe@{HOST}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        self.trunk.send(request)
        key = call_id.encode()
        self.stale_call_ids.add(key)
        self.wait(lambda: bool(self.arrived(self.trunk, key)), f"483 for {call_id} at the trunk")
        assert [status_of(data) for data in self.arrived(self.trunk, key)] == [483]

    def fence(self, *, from_trunk: bool = False) -> tuple[list[bytes], list[bytes]]:
        """Probe, then return what PBX and trunk got before it (the probe itself left out);
        `from_trunk` when the step's own message came from the trunk side."""
        if from_trunk:
            self.probe_from_trunk()
        self.probe()
        probe_id = f"probe-{self.transport}-{self.probes}@pbx".encode()
        self.stale_call_ids.add(probe_id)
        return self.take(self.pbx), self.take(self.trunk)


@contextmanager
def running_proxy(tmp: Path, transport: str, idle_timeout: float = 30.0) -> Iterator[Live]:
    """`callerid-proxy run` with test peers; on exit it must still run and stop cleanly.
    A short TCP idle timeout only where a test waits for it: a loaded machine could otherwise
    see a connection closed under a slow test."""
    proxy_port, pbx_port, trunk_port = free_port(), free_port(), free_port()
    pbx: Peer
    trunk: Peer
    if transport == "udp":
        pbx, trunk = UdpPeer(pbx_port, proxy_port), UdpPeer(trunk_port, proxy_port)
        prefix = ""
    else:
        pbx, trunk = TcpPeer(proxy_port=proxy_port), TcpPeer(listen_port=trunk_port)
        prefix = "tcp:"
    pid_file = tmp / f"proxy-{transport}-{proxy_port}.pid"
    log = tmp / f"proxy-{transport}-{proxy_port}.log"
    executable = shutil.which("callerid-proxy")
    command = [executable] if executable else [sys.executable, "-m", "proxy"]
    command += [
        "run", "--rules", str(RULES), "--listen", f"{HOST}:{proxy_port}",
        "--pbx", f"{prefix}{HOST}:{pbx_port}", "--trunk", f"{prefix}{HOST}:{trunk_port}",
        "--pid-file", str(pid_file), "--secret", "x", "--log-level", "warning",
        "--tcp-idle-timeout", str(idle_timeout),
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    live = Live(transport, process, proxy_port, pbx, trunk, log, ActiveRules.load(RULES))
    try:
        status = pid_file.with_name(pid_file.name + ".status")
        deadline = time.monotonic() + 15
        while not status.exists():
            assert process.poll() is None, f"proxy exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no status file; log: {log.read_text()}"
            time.sleep(0.05)
        yield live
        assert process.poll() is None, f"the proxy died; log:\n{live.log_tail()}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, live.log_tail()
        assert not pid_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        pbx.close()
        trunk.close()


def rounds() -> list[list[str]]:
    """The files in as few rounds as possible so that no two in a round share a transaction key
    (RFC 3261 17.2.3: branch, sent-by, method). cparam01/02 and escnull/regescrt do: in one
    process the second is rightly absorbed as a retransmission of the first (tested sans-IO)."""
    result: list[list[str]] = []
    keys: list[set[tuple[str, ...]]] = []
    for name in NAMES:
        try:
            key = {server_key(parse_message(load(name), datagram=True))}
        except SipError:
            key = set()
        for index, taken in enumerate(keys):
            if not key & taken:
                result[index].append(name)
                taken |= key
                break
        else:
            result.append([name])
            keys.append(set(key))
    return result


TRANSPORTS = ["udp", "tcp"]


# ----------------------------------------------------------------------------- steps
def fresh_connection(live: Live) -> None:
    if isinstance(live.pbx, TcpPeer):
        live.pbx.connect()


def wait_closed(live: Live, *, at_least: float = 0.0) -> float:
    """The proxy closes the PBX's current connection; returns after how long."""
    assert isinstance(live.pbx, TcpPeer)
    stream, sent = live.pbx.live_stream(), time.monotonic()
    live.wait(lambda: stream.closed_at is not None, "the proxy to close the connection",
              timeout=at_least + WAIT)
    assert stream.closed_at is not None
    return stream.closed_at - sent


def request_step(live: Live, name: str) -> None:
    data = load(name)
    outcome = (STREAM_EXPECTED if live.transport == "tcp" else EXPECTED)[name]
    fresh_connection(live)
    started = time.monotonic()
    live.pbx.send(data)
    if outcome.kind is Kind.WAIT:
        # clerr on a stream: silence while the body is awaited, then closed at the idle timeout
        elapsed = wait_closed(live, at_least=IDLE_TIMEOUT)
        assert time.monotonic() - started >= IDLE_TIMEOUT * 0.9 and elapsed >= IDLE_TIMEOUT * 0.9
    elif outcome.kind in (Kind.CLOSE, Kind.FORWARD_BOTH):
        wait_closed(live)
    back, onward = live.fence()
    own_id = call_id_of(data)
    if own_id is not None:
        live.stale_call_ids.add(own_id)
    if outcome.kind is Kind.FORWARD:
        assert [status_of(d) for d in back] in ([], [100]), [start_line(d) for d in back]
        assert len(onward) == 1, [start_line(d) for d in onward]
        # an INVITE from the PBX: a new call's, or one claiming a dialog that never went
        # through us (a To tag, no Route of ours: wsinv), gets its caller ID decided
        initial_invite = parse_message(data, datagram=True).method == "INVITE"
        number = live.expected_number(data) if initial_invite else ""
        check_forwarded(data, onward[0], rewritten_identity=initial_invite, number=number)
    elif outcome.kind is Kind.FORWARD_BOTH:
        first, second = data.split(b"\r\n\r\n\r\n", 1)
        assert [start_line(d) for d in onward] == [start_line(first), start_line(second)]
        check_forwarded(first + b"\r\n\r\n", onward[0], rewritten_identity=False)
        check_forwarded(second, onward[1], rewritten_identity=True,
                        number=live.expected_number(second))
        live.stale_call_ids.add(call_id_of(second) or b"")
        assert [status_of(d) for d in back] == [100]
    elif outcome.kind in (Kind.REPLY, Kind.CLOSE):
        assert onward == [], [start_line(d) for d in onward]
        assert len(back) == 1, [start_line(d) for d in back]
        check_reply(data, back[0], outcome.status)
    else:
        assert outcome.kind in (Kind.WAIT, Kind.DROP)
        assert (back, onward) == ([], [])


def response_step(live: Live, name: str) -> None:
    data = load(name)
    fresh_connection(live)
    request = request_for(data, live.pbx.via(f"z9hG4bK-live-{name}"), contact_port=5070)
    call_id = call_id_of(request)
    assert call_id is not None
    live.pbx.send(request)
    live.wait(lambda: bool(live.arrived(live.trunk, call_id)), f"{name} request at the trunk")
    forwarded = live.arrived(live.trunk, call_id)[0]
    response = with_vias(data, via_lines(forwarded))
    live.trunk.send(response)
    back, onward = live.fence(from_trunk=True)
    live.stale_call_ids.add(call_id)
    assert onward == [forwarded]
    trying = [d for d in back if d.startswith(b"SIP/2.0 100 ") and b"Server: callerid-proxy" in d]
    relayed = [d for d in back if d not in trying]
    if EXPECTED[name].kind is Kind.RELAY:
        assert relayed == [without_top_via(response)]
    else:  # noreason's 100 is hop by hop; scalarlg and bigcode cannot be parsed: dropped
        assert relayed == [], [start_line(d) for d in relayed]


def step(live: Live, name: str) -> None:
    try:
        if name == "bcast":
            # straight from the trunk (over TCP on the connection the proxy opened to it, which
            # a probe makes sure exists): top Via not ours, dropped
            live.fence()
            live.trunk.send(load(name))
            back, onward = live.fence(from_trunk=True)
            assert (back, onward) == ([], [])
        elif name in ("unreason", "noreason", "scalarlg", "bigcode"):
            response_step(live, name)
        else:
            request_step(live, name)
    except AssertionError as error:
        raise AssertionError(f"{name} over {live.transport}: {error}") from error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_all_49_torture_messages(transport: str, tmp_path: Path) -> None:
    played = []
    for names in rounds():
        with running_proxy(tmp_path, transport) as live:
            for name in names:
                if name != "clerr":
                    step(live, name)
                    played.append(name)
    # clerr on TCP waits for the idle timeout: a proxy of its own with a short one
    with running_proxy(tmp_path, transport, idle_timeout=IDLE_TIMEOUT) as live:
        step(live, "clerr")
        played.append("clerr")
        step(live, "wsinv")  # and the next connection is served normally
    assert sorted(played) == list(NAMES)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_message_one_byte_per_segment(transport: str, tmp_path: Path) -> None:
    data = load("wsinv")
    with running_proxy(tmp_path, transport) as live:
        fresh_connection(live)
        if isinstance(live.pbx, TcpPeer):
            sock = live.pbx.live_stream().sock
            for index in range(len(data)):
                sock.send(data[index : index + 1])
                time.sleep(0.0005)
        else:
            live.pbx.send(data)
        back, onward = live.fence()
        assert [status_of(d) for d in back] == [100]
        assert len(onward) == 1
        # its To tag claims a dialog that never went through us: its caller ID is decided
        check_forwarded(data, onward[0], rewritten_identity=True,
                        number=live.expected_number(data))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_parser_samples_through_a_real_connection(transport: str, tmp_path: Path) -> None:
    """The parser unit tests' valid messages, in uneven segments: forwarded as the units say."""
    rng = random.Random(4475)
    with running_proxy(tmp_path, transport) as live:
        for label, data in SAMPLES.items():
            if isinstance(live.pbx, TcpPeer):
                sock = live.pbx.live_stream().sock
                position = 0
                while position < len(data):
                    size = rng.randint(1, 40)
                    sock.send(data[position : position + size])
                    position += size
                    time.sleep(0.001)
            else:
                live.pbx.send(data)
            back, onward = live.fence()
            live.stale_call_ids.add(call_id_of(data) or b"")
            assert len(onward) == 1, label
            rewrite = parse_message(data, datagram=True).method == "INVITE"
            number = live.expected_number(data) if rewrite else ""
            check_forwarded(data, onward[0], rewritten_identity=rewrite, number=number)
            assert [status_of(d) for d in back] == ([100] if rewrite else []), label

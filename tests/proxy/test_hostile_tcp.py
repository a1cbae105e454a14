"""TCP against outsiders, on the real process: caps, deadlines, backpressure, descriptors."""

from __future__ import annotations

import resource
import socket
import time
from contextlib import ExitStack, suppress
from pathlib import Path

from proxy.tcp_accept import ConnectionBudget, TcpLimits
from tests.proxy.hostile_support import (
    ATTACKER,
    PBX_HOST,
    RunningProxy,
    closed_by_peer,
    open_fds,
    options,
    running_proxy,
    tcp_from,
    tracebacks,
    wait_for,
)


def _open(stack: ExitStack, host: str, port: int, count: int) -> list[socket.socket]:
    """`count` connections from `host`; one the proxy resets before connect() returns is kept
    too (closed), so that `_still_open` counts it as refused."""
    opened = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.enter_context(sock)
        sock.bind((host, 0))
        sock.settimeout(5.0)
        with suppress(ConnectionResetError):
            sock.connect((PBX_HOST, port))
        opened.append(sock)
    return opened


def _still_open(socks: list[socket.socket], within: float = 0.3) -> list[socket.socket]:
    """The ones the proxy has not closed (a refused connection gets RST at once)."""
    time.sleep(within)
    alive = []
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        except BlockingIOError:
            alive.append(sock)
            continue
        except OSError:  # reset: refused
            continue
        if data:
            alive.append(sock)
    return alive


def test_untrusted_connections_are_capped_per_source_and_in_total_trusted_exempt(
    tmp_path: Path,
) -> None:
    flags = ["--tcp-max-per-source", "4", "--tcp-max-connections", "10",
             "--tcp-message-deadline", "30"]  # fmt: skip
    with running_proxy(tmp_path, flags) as proxy, ExitStack() as stack:
        attacker = _open(stack, ATTACKER, proxy.port, 30)
        assert len(_still_open(attacker)) == 4
        others = [_open(stack, f"127.0.0.{n}", proxy.port, 4) for n in (10, 11, 12)]
        assert sum(len(_still_open(group)) for group in others) == 6  # 10 in total
        pbx = _open(stack, PBX_HOST, proxy.port, 40)  # the PBX's address: trusted, exempt
        assert len(_still_open(pbx)) == 40
        status = proxy.status()
        counters = status["transport"]
        assert status["tcp_untrusted_connections"] == 10
        assert counters["tcp_refused_source_cap"] == 26 and counters["tcp_refused_total_cap"] == 6
        assert open_fds(proxy.process.pid) < 100
        proxy.alive()
        assert not tracebacks(proxy.log_text())


def test_an_untrusted_connection_is_closed_after_its_first_refused_request(
    tmp_path: Path,
) -> None:
    with running_proxy(tmp_path) as proxy, tcp_from(ATTACKER, proxy.port) as sock:
        sock.sendall(b"".join(options(f"pipelined-{n}") for n in range(3)))
        received = b""
        while len(received) < 100_000:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        assert received.count(b"SIP/2.0 ") == 1 and received.startswith(b"SIP/2.0 403")
        assert proxy.status()["transport"]["tcp_closed_untrusted"] == 1


def test_slow_senders_are_closed_at_the_message_deadline_not_the_idle_timeout(
    tmp_path: Path,
) -> None:
    flags = ["--tcp-message-deadline", "1", "--tcp-idle-timeout", "60",
             "--tcp-max-per-source", "50"]  # fmt: skip
    message = options("slow")
    with running_proxy(tmp_path, flags) as proxy, ExitStack() as stack:
        slow = _open(stack, ATTACKER, proxy.port, 20) + _open(stack, PBX_HOST, proxy.port, 2)
        started, sent = time.monotonic(), 0
        while sent < len(message) - 1 and time.monotonic() - started < 4.0:
            for sock in slow:
                with suppress(OSError):
                    sock.send(message[sent : sent + 1])  # one byte each 100 ms: never whole
            sent += 1
            time.sleep(0.1)
        assert sent < len(message) - 1
        assert all(closed_by_peer(sock, 3.0) for sock in slow)
        assert proxy.status()["transport"]["tcp_message_deadline"] == 22
        # A peer that sends whole messages stays, well past the deadline.
        with tcp_from(PBX_HOST, proxy.port) as good:
            for n in range(3):
                good.sendall(options(f"whole-{n}", via_host=PBX_HOST, max_forwards=0))
                assert good.recv(65536).startswith(b"SIP/2.0 483")
                time.sleep(0.6)
            assert not closed_by_peer(good, 0.6)


def _big_request(index: int, vias: int = 40) -> bytes:
    """An OPTIONS with Max-Forwards 0: answered 483 with every Via copied (a large reply)."""
    via_lines = "".join(
        f"Via: SIP/2.0/TCP {PBX_HOST}:{5000 + n};branch=z9hG4bK-{index}-{n}-{'x' * 60}\r\n"
        for n in range(vias)
    )
    return options(f"nonreader-{index}", via_host=PBX_HOST, max_forwards=0).replace(
        b"\r\nMax-Forwards", f"\r\n{via_lines}Max-Forwards".encode(), 1
    )


def test_a_peer_that_does_not_read_is_disconnected_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    with running_proxy(tmp_path, ["--tcp-max-write-buffer", "262144"]) as proxy:
        rss_before = proxy.rss_kb()
        sock = tcp_from(PBX_HOST, proxy.port, rcvbuf=4096)  # trusted, and it never reads
        batch = b"".join(_big_request(n) for n in range(100))
        cut_off = False
        with sock:
            for _ in range(200):  # at most 20,000 requests, ~95 MB of replies unread
                try:
                    sock.sendall(batch)
                except OSError:
                    cut_off = True
                    break
                if proxy.status()["transport"].get("tcp_write_buffer_full"):
                    cut_off = True
                    break
        assert cut_off, proxy.log_tail()
        wait_for(lambda: proxy.status()["tcp_connections"] == 0, "the connection to be gone")
        assert proxy.status()["transport"]["tcp_write_buffer_full"] == 1
        assert proxy.rss_kb() - rss_before < 60_000, (rss_before, proxy.rss_kb())
        proxy.alive()
        assert not tracebacks(proxy.log_text())


def test_a_4301_digit_content_length_closes_the_stream_without_a_traceback(
    tmp_path: Path,
) -> None:
    huge = "9" * 4301
    with running_proxy(tmp_path) as proxy:
        for host in (ATTACKER, PBX_HOST):
            with tcp_from(host, proxy.port) as sock:
                sock.sendall(options("huge").replace(b"Content-Length: 0", f"l: {huge}".encode()))
                assert closed_by_peer(sock, 5.0)
        proxy.alive()
        assert not tracebacks(proxy.log_text()), proxy.log_tail()
        assert "Fatal error" not in proxy.log_text()


def test_an_untrusted_connection_that_sends_nothing_is_closed_at_the_deadline(
    tmp_path: Path,
) -> None:
    flags = ["--tcp-message-deadline", "1", "--tcp-idle-timeout", "60"]
    with running_proxy(tmp_path, flags) as proxy, ExitStack() as stack:
        silent = _open(stack, ATTACKER, proxy.port, 3)
        trusted = _open(stack, PBX_HOST, proxy.port, 1)
        assert all(closed_by_peer(sock, 4.0) for sock in silent)
        assert not closed_by_peer(trusted[0], 0.5)  # the PBX's idle connection stays
        assert proxy.status()["transport"]["tcp_untrusted_silent"] == 3


def _limit_files(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_out_of_descriptors_is_counted_logged_once_and_accepting_resumes(
    tmp_path: Path,
) -> None:
    with running_proxy(tmp_path, preexec=lambda: _limit_files(64, 64)) as proxy:
        with ExitStack() as stack:
            socks = _open(stack, PBX_HOST, proxy.port, 120)  # trusted: no cap applies
            time.sleep(2.5)  # several accept retries while out of descriptors
            proxy.alive()
        time.sleep(1.5)  # the held connections are gone; accepting resumes within a second
        with tcp_from(PBX_HOST, proxy.port) as sock:
            sock.sendall(options("after-emfile", via_host=PBX_HOST, max_forwards=0))
            assert sock.recv(65536).startswith(b"SIP/2.0 483")
        assert len(socks) == 120
        log = proxy.log_text()
        assert log.count("tcp accept failed") == 1, log
        assert "Too many open files" in log
        assert proxy.status()["transport"]["tcp_accept_failed"] >= 2
        metrics = proxy.http("GET", "/metrics")[1].decode()
        assert 'callerid_proxy_transport_events_total{event="tcp_accept_failed"}' in metrics
        assert not tracebacks(log), log


def test_the_soft_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with running_proxy(tmp_path, preexec=lambda: _limit_files(256, hard)) as proxy:
        limits = Path(f"/proc/{proxy.process.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
        assert f"open files limit: {hard} (soft, was 256" in proxy.log_text()


def test_status_and_admin_survive_a_connection_flood(tmp_path: Path) -> None:
    with running_proxy(tmp_path, ["--tcp-message-deadline", "30"]) as proxy, \
            ExitStack() as stack:
        for n in range(10, 60):  # 50 untrusted addresses, 8 connections kept from each
            _open(stack, f"127.0.0.{n}", proxy.port, 9)
        _check_admin(proxy)


def _check_admin(proxy: RunningProxy) -> None:
    status = proxy.status()
    assert status["tcp_untrusted_connections"] == 400
    assert proxy.http("GET", "/healthz")[0] == 200


def test_the_connection_budget_counts_untrusted_sources_only() -> None:
    limits = TcpLimits(max_connections=3, max_per_source=2)
    budget = ConnectionBudget(limits, {PBX_HOST}.__contains__)
    assert [budget.admit(ATTACKER) for _ in range(3)] == [None, None, "tcp_refused_source_cap"]
    assert budget.admit("127.0.0.10") is None
    assert budget.admit("127.0.0.11") == "tcp_refused_total_cap"
    assert all(budget.admit(PBX_HOST) is None for _ in range(10))  # trusted: never counted
    assert budget.untrusted == 3
    budget.release(PBX_HOST)  # a trusted one closing frees nothing
    budget.release(ATTACKER)
    assert budget.untrusted == 2 and budget.admit(ATTACKER) is None
    for host in (ATTACKER, ATTACKER, "127.0.0.10", "127.0.0.10"):
        budget.release(host)  # one release too many for .10 is ignored
    assert budget.untrusted == 0 and budget.admit("127.0.0.11") is None

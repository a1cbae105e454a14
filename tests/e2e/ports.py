"""Free loopback ports, and bounded waits for a process to bind one."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` for both UDP and TCP right now, never handed out twice."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            if (host, port) in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
        _handed_out.add((host, port))
        return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


def free_port_run(count: int, host: str = "127.0.0.1", avoid: Iterable[int] = ()) -> int:
    """A port free like `free_port`, with the `count` ports after it free for UDP and TCP too
    (a `--workers` proxy uses listen port + 1 + i for worker i). `avoid`: ports already chosen
    for something not bound yet (another run), which the new run must not overlap."""
    taken = set(avoid)
    for _ in range(50):
        port = free_port(host)
        if taken.intersection(range(port, port + count + 1)):
            continue
        if port + count <= 65535 and all(
            _bindable(host, port + offset) for offset in range(1, count + 1)
        ):
            return port
    raise RuntimeError(f"no run of {count + 1} free ports on {host}")


def _bindable(host: str, port: int) -> bool:
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind((host, port))
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def _proc_net_address(host: str, port: int) -> str:
    """The local-address column of /proc/net/{udp,tcp} for an IPv4 address."""
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def is_bound(host: str, port: int, transport: str) -> bool:
    """Whether some process listens on host:port (TCP) or has bound it (UDP).

    Read from /proc/net so the check never races with the process binding it.
    """
    table = Path("/proc/net") / ("tcp" if transport == "tcp" else "udp")
    wanted = {_proc_net_address(host, port), _proc_net_address("0.0.0.0", port)}
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if local in wanted and (transport != "tcp" or state == "0A"):  # 0A = LISTEN
            return True
    return False

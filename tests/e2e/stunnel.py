"""stunnel (Debian's stunnel4) in front of SIPp, which Debian builds without TLS: a client side
(plain TCP in, TLS out) and a server side (TLS in, plain TCP out)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.certs import Issued
from tests.e2e.ports import is_bound, wait_until

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
BIND_TIMEOUT_S = 10.0


@contextmanager
def stunnel(
    workdir: Path,
    name: str,
    accept: tuple[str, int],
    connect: tuple[str, int],
    *,
    client: bool,
    issued: Issued | None = None,
    ca_file: Path | None = None,
    check_ip: str | None = None,
) -> Iterator[Path]:
    """Run one stunnel service in the foreground until the block ends; yields its log file.
    A client with `ca_file` verifies the server's chain (and `check_ip` its address)."""
    assert STUNNEL is not None, "stunnel is not installed"
    log = workdir / f"stunnel-{name}.log"
    lines = ["foreground = yes", "pid =", "debug = 6", f"output = {log}", f"[{name}]",
             f"client = {'yes' if client else 'no'}",
             f"accept = {accept[0]}:{accept[1]}", f"connect = {connect[0]}:{connect[1]}"]
    if issued is not None:
        lines += [f"cert = {issued.cert}", f"key = {issued.key}"]
    if ca_file is not None:
        lines += ["verifyChain = yes", f"CAfile = {ca_file}"]
    if check_ip is not None:
        lines.append(f"checkIP = {check_ip}")
    config = workdir / f"stunnel-{name}.conf"
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen([STUNNEL, str(config)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def bound() -> bool:
            if process.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise AssertionError(f"stunnel {name} exited with {process.returncode}\n{text}")
            return is_bound(accept[0], accept[1], "tcp")

        wait_until(bound, BIND_TIMEOUT_S, f"stunnel {name} to listen on {accept}")
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

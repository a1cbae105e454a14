"""The contract between `callerid-proxy apply` and a running proxy: a pid file and a status file.

The proxy writes its pid at start, and its status at start and after every SIGHUP reload.
`apply` signals the pid and polls the status until `reload_seq` moves, then reads the outcome.
Files rather than a socket keep the contract inspectable with `cat` and need no open port.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

DEFAULT_PID_FILE = Path("callerid-proxy.pid")
POLL_INTERVAL = 0.05


def status_path(pid_file: Path) -> Path:
    return pid_file.with_name(pid_file.name + ".status")


@dataclass(frozen=True)
class ProxyStatus:
    pid: int
    active_version: str
    rules_path: str
    reload_seq: int
    last_reload_ok: bool
    last_reload_version: str | None
    last_reload_errors: tuple[str, ...]
    updated_at: float

    def to_json(self) -> str:
        fields = asdict(self)
        fields["last_reload_errors"] = list(self.last_reload_errors)
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProxyStatus:
        """Raises ValueError if `text` is not a status as `to_json` writes it."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("status is not a JSON object")
        errors = _field(data, "last_reload_errors", list)
        if not all(isinstance(error, str) for error in errors):
            raise ValueError("last_reload_errors must be a list of strings")
        last_version = data.get("last_reload_version")
        if last_version is not None and not isinstance(last_version, str):
            raise ValueError("last_reload_version must be a string or null")
        updated_at = _field(data, "updated_at", (int, float))
        return cls(
            pid=_field(data, "pid", int),
            active_version=_field(data, "active_version", str),
            rules_path=_field(data, "rules_path", str),
            reload_seq=_field(data, "reload_seq", int),
            last_reload_ok=_field(data, "last_reload_ok", bool),
            last_reload_version=last_version,
            last_reload_errors=tuple(errors),
            updated_at=float(updated_at),
        )


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    # bool is an int subclass; a status with "pid": true is corrupt, not pid 1.
    wants_bool = kind is bool
    if not isinstance(value, kind) or (isinstance(value, bool) and not wants_bool):
        raise ValueError(f"status field {key!r} is missing or has the wrong type")
    return value


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one.

    No fsync: the files describe a running process, so after a power cut they are stale anyway.
    """
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_status(path: Path, status: ProxyStatus) -> None:
    _write_atomically(path, status.to_json())


def read_status(path: Path) -> ProxyStatus | None:
    """None if the file is missing, unreadable or not a valid status."""
    try:
        return ProxyStatus.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    _write_atomically(path, f"{pid}\n")


def read_pid_file(path: Path) -> int | None:
    """None if the file is missing, unreadable or does not hold a positive pid."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


class Outcome(Enum):
    APPLIED = "applied"
    REFUSED = "refused"
    OTHER_VERSION = "other_version"
    TIMEOUT = "timeout"
    NO_PROXY = "no_proxy"


@dataclass(frozen=True)
class ReloadResult:
    outcome: Outcome
    message: str
    status: ProxyStatus | None = None
    errors: tuple[str, ...] = ()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_reload(
    pid_file: Path,
    expected_version: str,
    timeout: float,
    *,
    poll_interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReloadResult:
    """SIGHUP the proxy in `pid_file` and wait for its status to report the reload.

    Refuses to signal when the status file does not vouch for the pid: SIGHUP kills a process
    that does not handle it, and a stale pid may now belong to something else.
    """
    pid = read_pid_file(pid_file)
    if pid is None:
        return ReloadResult(Outcome.NO_PROXY, f"no proxy: no readable pid file at {pid_file}")
    if not _process_exists(pid):
        return ReloadResult(
            Outcome.NO_PROXY, f"no proxy: process {pid} from {pid_file} is not running"
        )
    state_file = status_path(pid_file)
    before = read_status(state_file)
    if before is None or before.pid != pid:
        return ReloadResult(
            Outcome.NO_PROXY,
            f"no proxy: {state_file} does not describe process {pid} "
            "(is it a callerid-proxy, and has it finished starting?); nothing was sent",
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return ReloadResult(Outcome.NO_PROXY, f"cannot signal process {pid}: {exc.strerror}")
    return _await_reload(
        pid, state_file, before.reload_seq, expected_version, timeout, poll_interval, clock, sleep
    )


def _await_reload(
    pid: int,
    state_file: Path,
    seq_before: int,
    expected_version: str,
    timeout: float,
    poll_interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> ReloadResult:
    deadline = clock() + timeout
    while True:
        status = read_status(state_file)
        if status is not None and status.pid == pid and status.reload_seq > seq_before:
            return _judge(status, expected_version)
        if not _process_exists(pid):
            return ReloadResult(Outcome.NO_PROXY, f"process {pid} exited before confirming")
        if clock() >= deadline:
            return ReloadResult(
                Outcome.TIMEOUT,
                f"process {pid} did not confirm the reload within {timeout:g} s "
                f"(watching {state_file})",
            )
        sleep(poll_interval)


def _judge(status: ProxyStatus, expected_version: str) -> ReloadResult:
    if not status.last_reload_ok:
        return ReloadResult(
            Outcome.REFUSED,
            f"the proxy refused {status.rules_path}; version {status.active_version} stays active",
            status,
        )
    if status.active_version != expected_version:
        return ReloadResult(
            Outcome.OTHER_VERSION,
            f"the proxy reloaded {status.rules_path} and now runs version "
            f"{status.active_version}, not {expected_version}: it runs another file "
            "(or the file changed again)",
            status,
        )
    return ReloadResult(Outcome.APPLIED, f"applied version {expected_version}", status)


def request_reload_via_admin(
    address: tuple[str, int], expected_version: str, timeout: float, *, token: str | None = None
) -> ReloadResult:
    """POST /reload to the proxy's admin endpoint (with `token` as a bearer token); its answer
    is the outcome, no polling."""
    host, port = address
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/reload"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    # Never through an HTTP proxy from the environment: the admin endpoint is local.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 422: the proxy refused the file
        if exc.code in (401, 403):
            detail = exc.read().decode(errors="replace").strip()
            return ReloadResult(Outcome.NO_PROXY, f"the admin endpoint refused: {detail}")
        answer = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        return ReloadResult(Outcome.NO_PROXY, f"no proxy answering at {url}: {exc}")
    version = str(answer.get("version", ""))
    errors = tuple(str(line) for line in answer.get("errors", ()))
    if not answer.get("ok"):
        return ReloadResult(
            Outcome.REFUSED, f"the proxy refused the file; version {version} stays active",
            errors=errors,
        )
    if version != expected_version:
        return ReloadResult(
            Outcome.OTHER_VERSION,
            f"the proxy reloaded {answer.get('rules_path', 'its rules')} and now runs version "
            f"{version}, not {expected_version}: it runs another file (or the file changed again)",
        )
    return ReloadResult(Outcome.APPLIED, f"applied version {expected_version}")


class PidFileTaken(Exception):
    pass


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def is_callerid_proxy(pid: int) -> bool:
    """Whether `pid` runs callerid-proxy: the installed script, or `python -m proxy`."""
    words = _cmdline(pid)
    if any(Path(word).name == "callerid-proxy" for word in words):
        return True
    return any(a == "-m" and b == "proxy" for a, b in itertools.pairwise(words))


def refuse_live_pid_file(path: Path) -> None:
    """Raises PidFileTaken when `path` names another live callerid-proxy: a second proxy must
    not take over the file `apply` uses to reach the first. A stale file is simply replaced."""
    pid = read_pid_file(path)
    if pid is None or pid == os.getpid() or not _process_exists(pid):
        return
    if is_callerid_proxy(pid):
        raise PidFileTaken(
            f"pid file {path} belongs to callerid-proxy process {pid}, which is running: "
            "stop it first, or give this one another --pid-file"
        )


def remove_own_files(pid_file: Path, pid: int) -> None:
    """On exit, remove the pid and status files only if they are still ours."""
    if read_pid_file(pid_file) == pid:
        pid_file.unlink(missing_ok=True)
    state = status_path(pid_file)
    status = read_status(state)
    if status is not None and status.pid == pid:
        state.unlink(missing_ok=True)


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd (Type=notify) our state, e.g. "READY=1": one datagram to $NOTIFY_SOCKET
    (sd_notify(3)). False when not run by systemd, or when the socket cannot be reached."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True

"""`check`, `explain` and `apply`, run as the administrator runs them: as subprocesses.

`apply` talks to a fake proxy: a real process that writes its pid file, handles SIGHUP by
loading its rules with `rules.load` and reports through `control.write_status`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy import control

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "rules" / "example.yaml"
SWITCH_OFF = "apply_to_users_with_own_number: false"
SWITCH_ON = "apply_to_users_with_own_number: true"

FAKE_PROXY = """
import signal, sys, threading, time
from pathlib import Path

import rules
from proxy import control

rules_path, pid_file, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
hup = threading.Event()
signal.signal(signal.SIGHUP, lambda signum, frame: hup.set())
control.write_pid_file(pid_file, control.os.getpid())
active = rules.load(rules_path).version
control.write_status(control.status_path(pid_file), control.ProxyStatus(
    control.os.getpid(), active, rules_path, 0, True, active, (), time.time()))
seq = 0
while True:
    if not hup.wait(0.01):
        continue
    hup.clear()
    if mode == "ignore-hup":
        continue
    try:
        version, errors, ok = rules.load(rules_path).version, (), True
        active = version
    except rules.RulesError as exc:
        version, errors, ok = None, exc.errors, False
    seq += 1
    control.write_status(control.status_path(pid_file), control.ProxyStatus(
        control.os.getpid(), active, rules_path, seq, ok, version, errors, time.time()))
"""


def cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class FakeProxy:
    def __init__(self, tmp_path: Path, rules_path: Path, mode: str = "reload") -> None:
        script = write(tmp_path / "fake_proxy.py", FAKE_PROXY)
        self.pid_file = tmp_path / "callerid-proxy.pid"
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(rules_path), str(self.pid_file), mode]
        )
        deadline = time.monotonic() + 10
        while self.status() is None:
            assert self.process.poll() is None, "fake proxy died at start"
            assert time.monotonic() < deadline, "fake proxy never wrote its status"
            time.sleep(0.01)

    def status(self) -> control.ProxyStatus | None:
        return control.read_status(control.status_path(self.pid_file))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[type[FakeProxy]]:
    started: list[FakeProxy] = []

    class Started(FakeProxy):
        def __init__(self, tmp: Path, rules_path: Path, mode: str = "reload") -> None:
            super().__init__(tmp, rules_path, mode)
            started.append(self)

    yield Started
    for proxy in started:
        proxy.stop()


# check


def test_check_valid_file_prints_a_summary() -> None:
    result = cli("check", EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: OK, version ")
    assert "country BE, 4 numbers, 2 users (1 with own number), 2 rules" in result.stdout
    assert result.stderr == ""


def test_check_invalid_file_lists_every_error_with_file_and_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        EXAMPLE.read_text()
        .replace('"0044"', "0044")
        .replace('"+3228880001"         #', '"+3228880009"         #')
        .replace('  - "+33144556677"\n', '  - "+33144556677"\n  - "+3228880000"\n'),
    )
    result = cli("check", bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:10: error: duplicate number +3228880000 (first at line 5)",
        f"{bad}:13: error: user '1001': +3228880009 is not in numbers "
        "(only the company's numbers are shown)",
        f"{bad}:18: error: destination_prefix: unquoted 0044 is read by YAML as the int 36; "
        'quote it: "0044"',
        f"{bad}: 3 error(s)",
    ]


def test_check_prints_warnings_on_success(tmp_path: Path) -> None:
    shadowed = EXAMPLE.read_text() + (
        '    - destination_prefix: "+4420"\n      number: "+3228880001"\n'
    )
    path = write(tmp_path / "shadowed.yaml", shadowed)
    result = cli("check", path)
    assert result.returncode == 0
    assert result.stderr == (
        f"{path}:21: warning: rule #3 (destination_prefix '+4420') can never match: rule #1 "
        "(destination_prefix '0044', line 17) matches every such destination first\n"
    )


def test_check_missing_file(tmp_path: Path) -> None:
    result = cli("check", tmp_path / "nope.yaml")
    assert result.returncode == 1
    assert "cannot read" in result.stderr


# explain


@pytest.mark.parametrize(
    ("switch", "user", "to", "number", "step"),
    [
        (SWITCH_OFF, "1001", "00441234567890", "+3228880001", "step 1"),
        (SWITCH_ON, "1001", "00441234567890", "+442071234567", "step 2"),
        (SWITCH_OFF, "1002", "+33123456789", "+33144556677", "step 2"),
        (SWITCH_OFF, "1001", "02 123 45 67", "+3228880001", "step 1"),
        (SWITCH_ON, "1001", "+3221234567", "+3228880001", "step 3"),
        (SWITCH_OFF, "1002", "02 123 45 67", "+3228880000", "step 4"),
        (SWITCH_ON, "5555", "0032 2 123 45 67", "+3228880000", "step 4"),
    ],
)
def test_explain_done_means(
    tmp_path: Path, switch: str, user: str, to: str, number: str, step: str
) -> None:
    path = write(tmp_path / "r.yaml", EXAMPLE.read_text().replace(SWITCH_OFF, switch))
    result = cli("explain", path, "--user", user, "--to", to, "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert set(decision) == {"number", "name", "reason", "step", "rule", "privacy"}
    assert decision["step"] == step and decision["privacy"] is None
    assert decision["number"] == number
    assert decision["reason"].startswith(step + ":")


def test_explain_text_says_what_and_why() -> None:
    result = cli("explain", EXAMPLE, "--user", "1002", "--to", "0044 20 7946 0000")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        'user 1002 calling 0044 20 7946 0000 shows +442071234567 "ACME UK"',
        "because step 2: advanced rule #1 (destination_prefix '0044', line 17) matches "
        "destination '0044 20 7946 0000'",
    ]


def test_explain_table_shows_every_user_against_every_rule() -> None:
    result = cli("explain", EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["user", "0044", "0033", "(other)"]
    assert lines[2].split() == ["1001", *["+3228880001", "(own)"] * 3]
    assert lines[3].split() == [
        "1002",
        "+442071234567",
        "(rule",
        "#1)",
        "+33144556677",
        "(rule",
        "#2)",
        "+3228880000",
        "(default)",
    ]
    assert lines[4].startswith("(other users)")
    assert "0044 as +44000000000" in result.stdout


def test_explain_table_json() -> None:
    result = cli("explain", EXAMPLE, "--json")
    table = json.loads(result.stdout)
    assert [c["label"] for c in table["columns"]] == ["0044", "0033", "(other)"]
    assert [row["user"] for row in table["rows"]] == ["1001", "1002", "(other users)"]
    assert table["rows"][1]["decisions"][0]["name"] == "ACME UK"


def test_explain_needs_both_user_and_to() -> None:
    result = cli("explain", EXAMPLE, "--user", "1001")
    assert result.returncode == 2
    assert "give both --user and --to" in result.stderr


# apply


def test_apply_confirms_the_new_version(tmp_path: Path, start_proxy: type[FakeProxy]) -> None:
    live = write(tmp_path / "live.yaml", EXAMPLE.read_text())
    proxy = start_proxy(tmp_path, live)
    # The administrator edits the file the proxy runs, then applies it.
    write(live, EXAMPLE.read_text().replace(SWITCH_OFF, SWITCH_ON))
    result = cli("apply", live, "--pid-file", proxy.pid_file)
    status = proxy.status()
    assert status is not None
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"applied version {status.active_version} (2 users, 2 rules)\n"
    assert status.reload_seq == 1 and status.last_reload_ok
    assert cli("check", live).stdout.split("version ")[1].startswith(status.active_version)


def test_apply_uses_the_pid_file_in_the_working_directory_by_default(
    tmp_path: Path, start_proxy: type[FakeProxy]
) -> None:
    live = write(tmp_path / "live.yaml", EXAMPLE.read_text())
    start_proxy(tmp_path, live)
    result = cli("apply", live, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("applied version ")


def test_apply_invalid_file_sends_nothing(tmp_path: Path, start_proxy: type[FakeProxy]) -> None:
    live = write(tmp_path / "live.yaml", EXAMPLE.read_text())
    proxy = start_proxy(tmp_path, live)
    bad = write(tmp_path / "bad.yaml", EXAMPLE.read_text().replace('"0033"', "0033"))
    result = cli("apply", bad, "--pid-file", proxy.pid_file)
    assert result.returncode == 1
    assert "quote it" in result.stderr
    assert "nothing was sent to the proxy" in result.stderr
    time.sleep(0.2)
    status = proxy.status()
    assert status is not None and status.reload_seq == 0
    assert proxy.process.poll() is None


def test_apply_reports_the_proxys_refusal(tmp_path: Path, start_proxy: type[FakeProxy]) -> None:
    live = write(tmp_path / "live.yaml", EXAMPLE.read_text())
    proxy = start_proxy(tmp_path, live)
    before = proxy.status()
    # The proxy's own file gets broken after it started; the file applied is fine.
    write(live, EXAMPLE.read_text().replace('"+3228880000"\nusers', '"+3299999999"\nusers'))
    result = cli("apply", EXAMPLE, "--pid-file", proxy.pid_file)
    assert result.returncode == 1
    assert f"the proxy refused {live}" in result.stderr
    assert f"{live}:10: error: default_outgoing_number: +3299999999 is not in numbers" in (
        result.stderr
    )
    status = proxy.status()
    assert before is not None and status is not None
    assert status.active_version == before.active_version
    assert not status.last_reload_ok


def test_apply_detects_a_proxy_running_another_file(
    tmp_path: Path, start_proxy: type[FakeProxy]
) -> None:
    other = write(tmp_path / "other.yaml", EXAMPLE.read_text().replace(SWITCH_OFF, SWITCH_ON))
    proxy = start_proxy(tmp_path, other)
    result = cli("apply", EXAMPLE, "--pid-file", proxy.pid_file)
    assert result.returncode == 1
    assert "it runs another file" in result.stderr
    assert str(other) in result.stderr


def test_apply_times_out_without_confirmation(tmp_path: Path, start_proxy: type[FakeProxy]) -> None:
    live = write(tmp_path / "live.yaml", EXAMPLE.read_text())
    proxy = start_proxy(tmp_path, live, mode="ignore-hup")
    started = time.monotonic()
    result = cli("apply", live, "--pid-file", proxy.pid_file, "--timeout", "0.3")
    assert result.returncode == 1
    assert "did not confirm the reload within 0.3 s" in result.stderr
    assert time.monotonic() - started < 10


def test_apply_without_a_proxy(tmp_path: Path) -> None:
    result = cli("apply", EXAMPLE, "--pid-file", tmp_path / "callerid-proxy.pid")
    assert result.returncode == 1
    assert "no proxy: no readable pid file" in result.stderr


def test_apply_with_a_dead_pid(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = tmp_path / "callerid-proxy.pid"
    control.write_pid_file(pid_file, dead.pid)
    result = cli("apply", EXAMPLE, "--pid-file", pid_file)
    assert result.returncode == 1
    assert f"process {dead.pid} from {pid_file} is not running" in result.stderr

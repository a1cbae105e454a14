"""SIGHUP reloads the rules between calls; an invalid file leaves the old rules active."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.calls import Outbound, place_outbound
from tests.e2e.conftest import EXAMPLE_RULES, StartProxy

USER_1001_LINE = '  "1001": "+3228880001"\n'


def test_reload_between_two_calls_changes_the_shown_number(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path
) -> None:
    proxy = start_proxy()
    place_outbound(Outbound("1001", "025551234", "+3228880001"), proxy, tmp_path)
    version_before = proxy.status()["active_version"]

    assert USER_1001_LINE in EXAMPLE_RULES
    rules_file.write_text(EXAMPLE_RULES.replace(USER_1001_LINE, '  "1001": "+33144556677"\n'))
    status = proxy.reload()
    assert status["last_reload_ok"] is True, f"{status}\n{proxy.log_tail()}"
    assert status["active_version"] != version_before, status

    place_outbound(Outbound("1001", "025551234", "+33144556677"), proxy, tmp_path)


def test_invalid_rules_on_reload_leave_the_old_rules_active(
    start_proxy: StartProxy, rules_file: Path, tmp_path: Path
) -> None:
    proxy = start_proxy()
    version_before = proxy.status()["active_version"]

    # Valid YAML, invalid rules: user 1001 points at a number the company does not own.
    rules_file.write_text(EXAMPLE_RULES.replace(USER_1001_LINE, '  "1001": "+3228889999"\n'))
    status = proxy.reload()
    assert status["last_reload_ok"] is False, f"{status}\n{proxy.log_tail()}"
    assert status["last_reload_errors"], status
    assert status["active_version"] == version_before, status

    place_outbound(Outbound("1001", "025551234", "+3228880001"), proxy, tmp_path)

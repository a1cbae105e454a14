"""check and explain with the issue-9 settings: withheld calls, local presence, emergency."""

from __future__ import annotations

import json
from pathlib import Path

from tests.proxy.test_rules_cli import cli, write

RULES = """\
country: BE
numbers:
  - "+3228880000"
  - number: "+442071234567"
    name: "ACME London"
  - "+441612345678"
default_outgoing_number: "+3228880000"
users:
  "1001": "+441612345678"
  "1003": anonymous
advanced_rules:
  local_presence: true
  rules:
    - destination_prefix: "+3390"
      number: anonymous
"""


def test_check_warns_when_an_emergency_call_shows_a_foreign_number(tmp_path: Path) -> None:
    result = cli("check", write(tmp_path / "r.yaml", RULES))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'r.yaml'}:6: warning: emergency calls of 1001 would show +441612345678, "
        "which is not a number of BE (+32) the emergency services can call back; set "
        "emergency_number to one of yours in that country"
    ]
    assert "local presence on, 1 withheld users" in result.stdout


def test_explain_json_of_a_withheld_call(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", RULES)
    result = cli("explain", path, "--user", "1003", "--to", "00442079460000", "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert {key: decision[key] for key in ("number", "name", "step", "rule", "privacy")} == {
        "number": "+442071234567",
        "name": "ACME London",
        "step": "local presence",
        "rule": None,
        "privacy": "id",
    }
    assert decision["reason"].startswith(
        "local presence: +442071234567 shares +44207 with the destination"
    )


def test_explain_text_of_an_anonymous_rule_and_of_privacy_asked(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", RULES)
    result = cli("explain", path, "--user", "1002", "--to", "+33901020304")
    assert result.stdout.splitlines()[0] == (
        "user 1002 calling +33901020304 is withheld (From Anonymous, Privacy: id); "
        "P-Asserted-Identity carries +3228880000"
    )
    asked = cli("explain", path, "--user", "1002", "--to", "+441619460000", "--privacy", "--json")
    assert json.loads(asked.stdout)["privacy"] == "id"
    emergency = cli("explain", path, "--user", "1003", "--to", "112", "--privacy", "--json")
    assert {key: json.loads(emergency.stdout)[key] for key in ("number", "step", "privacy")} == {
        "number": "+3228880000",
        "step": "emergency",
        "privacy": None,
    }


def test_the_table_gets_a_column_per_owned_country(tmp_path: Path) -> None:
    result = cli("explain", write(tmp_path / "r.yaml", RULES))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["user", "+3390", "+32", "(local)", "+44", "(local)", "(other)"]
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert "withheld, PAI +442071234567 (local)" in rows["1003"]
    assert "+441612345678 (own)" in rows["1001"]
    assert rows["(other"].split("  ")[0] == "(other users)"

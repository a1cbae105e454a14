"""`--untrusted reply|drop` (issue 7): what a request from any other source gets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from proxy.run_cli import SettingsError, add_run_command, build_settings, merged_settings

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {
    "rules": str(ROOT / "rules" / "example.yaml"), "pbx": "127.0.0.1:5070",
    "trunk": ["127.0.0.1:5080"], "secret": "s",
}


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="callerid-proxy")
    add_run_command(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


def test_the_default_is_a_short_403() -> None:
    config, _, _ = build_settings(dict(REQUIRED))
    assert config.untrusted == "reply"


@pytest.mark.parametrize("mode", ["reply", "drop"])
def test_the_flag_sets_the_mode(mode: str) -> None:
    settings = {**REQUIRED, **merged_settings(parse_args("--untrusted", mode))}
    config, _, _ = build_settings(settings)
    assert config.untrusted == mode


def test_the_config_file_may_set_it(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("untrusted: drop\n")
    from_file = merged_settings(parse_args("--config", str(path)))
    config, _, _ = build_settings({**REQUIRED, **from_file})
    assert config.untrusted == "drop"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args("--untrusted", "tarpit")
    with pytest.raises(SettingsError, match="reply or drop"):
        build_settings({**REQUIRED, "untrusted": "tarpit"})

"""Inbound calls trunk -> proxy -> PBX pass with their identities untouched."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.calls import inbound_sides
from tests.e2e.conftest import StartProxy
from tests.e2e.sipp import assert_all_succeeded, run_pair


def test_inbound_call_reaches_the_pbx_with_from_and_to_unchanged(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = start_proxy()
    pbx, trunk = inbound_sides(caller="+32470123456", callee="+3228880000", proxy=proxy)
    assert_all_succeeded(run_pair(pbx, trunk, tmp_path), calls=1, context=proxy.log_tail())

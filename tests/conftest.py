"""Suite-wide: which build of the SIP core the tests run (proxy/compiled_core.py).

- The header of every run says it.
- `@pytest.mark.source_build` tests watch calls between the core's own functions by patching
  them; compiled code calls them directly, past a patch, so these run only on the Python
  source (`scripts/test.sh` runs them again with CALLERID_PROXY_PURE=1).
- CALLERID_PROXY_REQUIRE_COMPILED=1 (scripts/test.sh sets it) refuses to run the suite on the
  Python source when the compiled build is what is installed: CI tests what ships.
"""

from __future__ import annotations

import os

import pytest

import proxy

REQUIRE_COMPILED = "CALLERID_PROXY_REQUIRE_COMPILED"


def pytest_report_header(config: pytest.Config) -> str:
    return f"SIP core: {proxy.CORE_BUILD.describe()}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "source_build: observes the core by patching its functions (Python source only)"
    )
    if os.environ.get(REQUIRE_COMPILED) == "1" and not proxy.CORE_BUILD.compiled:
        raise pytest.UsageError(
            f"{REQUIRE_COMPILED}=1 but the SIP core is the {proxy.CORE_BUILD.describe()}"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not proxy.CORE_BUILD.compiled:
        return
    skip = pytest.mark.skip(
        reason="patches core functions, which compiled code calls directly: runs on the Python "
        "source (CALLERID_PROXY_PURE=1)"
    )
    for item in items:
        if item.get_closest_marker("source_build") is not None:
            item.add_marker(skip)

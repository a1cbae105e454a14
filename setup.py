"""Build: the sans-IO SIP core (`proxy/sip/`) is compiled to C extensions with mypyc.

The core is plain `mypy --strict` Python; mypyc (part of mypy, the compiler black and mypy itself
ship with) turns the same source into native code, about 1.8x faster per call
(`bench/bench_calls.py`), with no second implementation to keep in step. Everything else stays
Python.

- `CALLERID_PROXY_PURE=1` at install time builds no extensions (and at run time ignores them).
- A machine that cannot compile them (no C compiler, no Python headers) gets the Python source,
  with a warning: the same code, slower.
- Each compiled source's SHA-256 goes into `proxy/compiled_core.json`; at import,
  `proxy/compiled_core.py` loads the Python source instead when any differs (an edited checkout
  of an editable install), so edited code never runs as a stale extension.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import cast

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CORE = Path("proxy") / "sip"
RECORD = HERE / "proxy" / "compiled_core.json"
GROUP = "proxy.sip._native"  # the shared library: proxy/sip/_native__mypyc.*.so


def core_sources() -> list[str]:
    """Every module of the core but the package's `__init__.py`: that stays Python, so the
    package is in `sys.modules` before its modules load the shared library inside it."""
    return sorted(
        path.as_posix() for path in (HERE / CORE).glob("*.py") if path.name != "__init__.py"
    )


def write_record(sources: list[str]) -> None:
    digests = {
        source: hashlib.sha256((HERE / source).read_bytes()).hexdigest() for source in sources
    }
    RECORD.write_text(json.dumps({"compiler": "mypyc", "sources": digests}, indent=1) + "\n")


def compiled_extensions() -> list[Extension]:
    if os.environ.get("CALLERID_PROXY_PURE") == "1":
        RECORD.unlink(missing_ok=True)
        return []
    from mypyc.build import mypycify

    os.chdir(HERE)  # mypyc names modules after the paths it is given, relative to here
    sources = [str(Path(source).relative_to(HERE)) for source in core_sources()]
    write_record(sources)
    # setuptools' Extension, since setuptools is imported (mypyc/build.py get_extension)
    return cast("list[Extension]", mypycify(sources, opt_level="3", group_name=GROUP))


class OptionalBuildExt(build_ext):
    """Builds the extensions, or, when the compiler fails, leaves the core as Python source."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as failure:  # CCompilerError, PlatformError, OSError...: any of them
            self.fall_back(failure)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as failure:
            self.fall_back(failure)

    def fall_back(self, failure: Exception) -> None:
        RECORD.unlink(missing_ok=True)  # no record: proxy/compiled_core.py runs the source
        print(f"warning: the SIP core was not compiled ({failure}); it runs as Python source")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})

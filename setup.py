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
- On Linux the shared library binds calls between its own functions directly
  (`-fno-semantic-interposition`, `-Wl,-Bsymbolic-functions`, as Debian links extensions): the
  core's functions call each other across modules of one library, and through the PLT each call
  cost an indirect jump; 544 -> 506 us per call in bench/bench_calls.py. A toolchain that refuses
  the flags gets the build without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import cast

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
GROUP = "proxy.sip._native"  # the shared library: proxy/sip/_native__mypyc.*.so
# Direct calls between the library's own functions (see above); Linux toolchains only.
DIRECT_CALLS_COMPILE = ("-fno-semantic-interposition",)
DIRECT_CALLS_LINK = ("-Wl,-Bsymbolic-functions",)


def load_compiled_core() -> ModuleType:
    """proxy/compiled_core.py by its path (stdlib only; importing the package would judge the
    build being made): what is compiled and what its record keeps is said there, once."""
    path = HERE / "proxy" / "compiled_core.py"
    spec = importlib.util.spec_from_file_location("compiled_core", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there (importlib's recipe)
    spec.loader.exec_module(module)
    return module


COMPILED_CORE = load_compiled_core()
RECORD: Path = COMPILED_CORE.RECORD


def write_record(sources: list[Path]) -> None:
    digests = {
        source.relative_to(HERE).as_posix(): COMPILED_CORE.fingerprint(source) for source in sources
    }
    RECORD.write_text(json.dumps({"compiler": "mypyc", "sources": digests}, indent=1) + "\n")


def compiled_extensions() -> list[Extension]:
    if os.environ.get("CALLERID_PROXY_PURE") == "1":
        RECORD.unlink(missing_ok=True)
        return []
    from mypyc.build import mypycify

    os.chdir(HERE)  # mypyc names modules after the paths it is given, relative to here
    sources = COMPILED_CORE.compiled_sources(COMPILED_CORE.CORE_DIR)
    write_record(sources)
    relative = [source.relative_to(HERE).as_posix() for source in sources]
    # setuptools' Extension, since setuptools is imported (mypyc/build.py get_extension)
    extensions = cast("list[Extension]", mypycify(relative, opt_level="3", group_name=GROUP))
    if sys.platform.startswith("linux"):
        for extension in extensions:
            with_direct_calls(extension)
    return extensions


def with_direct_calls(extension: Extension) -> None:
    extension.extra_compile_args = [*(extension.extra_compile_args or []), *DIRECT_CALLS_COMPILE]
    extension.extra_link_args = [*(extension.extra_link_args or []), *DIRECT_CALLS_LINK]


def without_direct_calls(extension: Extension) -> bool:
    """Take the flags back out; False when the extension had none of them."""
    compile_args = [a for a in extension.extra_compile_args or [] if a not in DIRECT_CALLS_COMPILE]
    link_args = [a for a in extension.extra_link_args or [] if a not in DIRECT_CALLS_LINK]
    changed = (compile_args, link_args) != (extension.extra_compile_args, extension.extra_link_args)
    extension.extra_compile_args, extension.extra_link_args = compile_args, link_args
    return changed


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
            if not without_direct_calls(ext):
                self.fall_back(failure)
                return
            print(f"warning: building {ext.name} again without direct calls ({str(failure)[:160]})")
            try:
                super().build_extension(ext)
            except Exception as second:
                self.fall_back(second)

    def fall_back(self, failure: Exception) -> None:
        RECORD.unlink(missing_ok=True)  # no record: proxy/compiled_core.py runs the source
        print(f"warning: the SIP core was not compiled ({failure}); it runs as Python source")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})

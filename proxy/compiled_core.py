"""Which build of the SIP core runs: the mypyc-compiled extensions, or the Python source.

`setup.py` compiles `proxy/sip/*.py` with mypyc at install and records each source's SHA-256 in
`proxy/compiled_core.json`. `use_fresh_build()` runs once, from `proxy/__init__.py`, before
anything imports `proxy.sip`: when the extensions are missing, stale (a source differs from the
one compiled: an edited checkout of an editable install) or refused (`CALLERID_PROXY_PURE=1`),
a finder first on `sys.meta_path` loads `proxy.sip` and its modules from their `.py` files, so
an edit is never shadowed by an old extension and the pure build stays testable.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PACKAGE = "proxy.sip"
PURE_ENV = "CALLERID_PROXY_PURE"
HERE = Path(__file__).resolve().parent
CORE_DIR = HERE / "sip"
RECORD = HERE / "compiled_core.json"


@dataclass(frozen=True)
class CoreBuild:
    compiled: bool
    reason: str
    """why this build: "compiled by mypyc", or why the Python source runs instead"""

    def describe(self) -> str:
        return ("compiled (mypyc)" if self.compiled else "Python source") + f": {self.reason}"


def compiled_sources(core_dir: Path) -> list[Path]:
    """The modules mypyc compiles: every one of the core but the package's `__init__.py`, which
    stays Python so that the package is in `sys.modules` before its modules load the shared
    library inside it (setup.py builds these, `judge` checks these)."""
    return sorted(path for path in core_dir.glob("*.py") if path.name != "__init__.py")


def fingerprint(path: Path) -> str:
    """What the build record keeps of a compiled source."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stale_sources(record: Mapping[str, str], root: Path, sources: Sequence[Path]) -> list[str]:
    """Sources (paths relative to `root`) whose bytes differ from the compiled record, plus
    sources the record lacks and recorded ones that are gone."""
    present = {path.relative_to(root).as_posix(): path for path in sources}
    stale = [name for name in record if name not in present]
    for name, path in present.items():
        if record.get(name) != fingerprint(path):
            stale.append(name)
    return sorted(stale)


def has_extensions(directory: Path) -> bool:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return any(path.name.endswith(suffixes) for path in directory.iterdir())


def judge(environ: Mapping[str, str], core_dir: Path, record_path: Path) -> CoreBuild:
    """What to run: the extensions only when present, asked for and fresh."""
    if not has_extensions(core_dir):
        return CoreBuild(False, "no compiled extensions (built with CALLERID_PROXY_PURE=1 or "
                                "without mypyc)")  # fmt: skip
    if environ.get(PURE_ENV) == "1":
        return CoreBuild(False, f"{PURE_ENV}=1")
    try:
        record = json.loads(record_path.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return CoreBuild(False, f"extensions without a readable {record_path.name}: rebuild")
    root = core_dir.parent.parent
    stale = stale_sources(record, root, compiled_sources(core_dir))
    if stale:
        shown = ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")
        return CoreBuild(False, f"sources changed since the build ({shown}): rebuild with "
                                "`pip install -e .`")  # fmt: skip
    return CoreBuild(True, "compiled by mypyc, sources unchanged since")


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds `proxy.sip` and its modules as the `.py` files in `core_dir`, ahead of any
    extension module beside them."""

    def __init__(self, core_dir: Path) -> None:
        self.core_dir = core_dir

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == PACKAGE:
            return importlib.util.spec_from_file_location(
                fullname, self.core_dir / "__init__.py",
                submodule_search_locations=[str(self.core_dir)],
            )  # fmt: skip
        if not fullname.startswith(PACKAGE + "."):
            return None
        source = self.core_dir / (fullname.rpartition(".")[2] + ".py")
        if not source.is_file():
            return None  # e.g. the mypyc shared library itself: nothing imports it then
        return importlib.util.spec_from_file_location(fullname, source)


def use_fresh_build() -> CoreBuild:
    """Decide once per process and, for the source build, put the finder in place."""
    build = judge(os.environ, CORE_DIR, RECORD)
    placed = any(isinstance(finder, SourceFirst) for finder in sys.meta_path)
    if not build.compiled and has_extensions(CORE_DIR) and not placed:
        sys.meta_path.insert(0, SourceFirst(CORE_DIR))
    return build

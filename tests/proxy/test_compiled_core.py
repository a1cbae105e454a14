"""Which build of the SIP core runs (proxy/compiled_core.py): the compiled one only when fresh."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import proxy
from proxy.compiled_core import CoreBuild, judge, stale_sources

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def core_tree(tmp_path: Path, *, extensions: bool = True) -> tuple[Path, Path]:
    """A fake checkout: proxy/sip with two modules (and their extensions), and the record."""
    core = tmp_path / "proxy" / "sip"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("")
    sources = {}
    for name in ("core", "parse"):
        (core / f"{name}.py").write_text(f"X = {name!r}\n")
        sources[f"proxy/sip/{name}.py"] = hashlib.sha256(f"X = {name!r}\n".encode()).hexdigest()
        if extensions:
            (core / f"{name}{SUFFIX}").write_bytes(b"\x7fELF")
    record = tmp_path / "proxy" / "compiled_core.json"
    record.write_text(json.dumps({"compiler": "mypyc", "sources": sources}))
    return core, record


def test_fresh_extensions_are_used(tmp_path: Path) -> None:
    core, record = core_tree(tmp_path)
    assert judge({}, core, record) == CoreBuild(True, "compiled by mypyc, sources unchanged since")


def test_an_edited_source_makes_the_python_source_run(tmp_path: Path) -> None:
    core, record = core_tree(tmp_path)
    (core / "parse.py").write_text("X = 'edited'\n")
    build = judge({}, core, record)
    assert not build.compiled and "proxy/sip/parse.py" in build.reason


@pytest.mark.parametrize("change", ["added", "removed"])
def test_a_module_added_or_removed_since_the_build_is_stale(tmp_path: Path, change: str) -> None:
    core, record = core_tree(tmp_path)
    if change == "added":
        (core / "timers.py").write_text("")
    else:
        (core / "core.py").unlink()
    stale = stale_sources(
        json.loads(record.read_text())["sources"], tmp_path,
        sorted(p for p in core.glob("*.py") if p.name != "__init__.py"),
    )  # fmt: skip
    assert stale == (["proxy/sip/timers.py"] if change == "added" else ["proxy/sip/core.py"])
    assert not judge({}, core, record).compiled


def test_the_environment_can_refuse_the_extensions(tmp_path: Path) -> None:
    core, record = core_tree(tmp_path)
    assert judge({"CALLERID_PROXY_PURE": "1"}, core, record) == CoreBuild(
        False, "CALLERID_PROXY_PURE=1"
    )


def test_extensions_without_their_record_are_not_trusted(tmp_path: Path) -> None:
    core, record = core_tree(tmp_path)
    record.unlink()
    assert not judge({}, core, record).compiled


def test_no_extensions_is_the_python_source(tmp_path: Path) -> None:
    core, record = core_tree(tmp_path, extensions=False)
    build = judge({}, core, record)
    assert not build.compiled and "no compiled extensions" in build.reason


def _core_file(environ: dict[str, str]) -> str:
    code = "import proxy.sip.core as c, proxy; print(c.__file__); print(proxy.CORE_BUILD.compiled)"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **environ}, timeout=60,
    )  # fmt: skip
    return run.stdout


def test_the_pure_switch_loads_every_core_module_from_its_source() -> None:
    out = _core_file({"CALLERID_PROXY_PURE": "1"})
    assert out.splitlines() == [str(ROOT / "proxy" / "sip" / "core.py"), "False"]


@pytest.mark.skipif(not proxy.CORE_BUILD.compiled, reason="the compiled core is not installed")
def test_the_compiled_build_loads_the_extension() -> None:
    path, compiled = _core_file({}).splitlines()
    assert path.endswith(SUFFIX) and compiled == "True"


def test_a_wheel_carries_the_compiled_core_and_its_record(tmp_path: Path) -> None:
    """A plain `pip install .` (a wheel, not the editable install) runs the compiled core: the
    extensions and the build record that vouches for them are both in the wheel, the record
    matching the wheel's sources. Built from a copy of the checkout's files, so that this tree's
    own build and record stay as they are."""
    from bench.interpreters import copy_sources  # the files a clone has

    source = copy_sources(ROOT, tmp_path / "source")
    env = {key: value for key, value in os.environ.items() if key != "CALLERID_PROXY_PURE"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheels"), str(source)],
        check=True, env=env, timeout=900, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("callerid_proxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        record = json.loads(archive.read("proxy/compiled_core.json"))
        assert record["compiler"] == "mypyc"
        assert record["sources"], "the record names the compiled sources"
        for path, digest in record["sources"].items():
            assert hashlib.sha256(archive.read(path)).hexdigest() == digest
    assert any(name.startswith("proxy/sip/core.") and name.endswith(".so") for name in names)

"""Which CPython runs callerid-proxy in the benchmark, and the proxy installed for another one.

The interpreter matters as much as the code: the same compiled core costs a third less CPU per
call under a statically linked CPython built with PGO and LTO (Debian's /usr/bin/python3.11)
than under a default pyenv build (libpython as a shared library, no PGO), on the same machine
(`bench/bench_calls.py`). So the benchmark says which one ran each row, and
`vs_kamailio.py --python PATH` adds rows for another interpreter: a fresh venv of it with the
proxy installed by its own pip from a copy of this checkout's files (the core compiled with that
interpreter's headers and flags, as a user's `pip install` would), run from there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL_TIMEOUT_S = 900.0  # a venv, the dependencies from the registry, the mypyc build
# What the interpreter says of itself: its executable, its version, and whether libpython is a
# shared library mapped into it (Linux: /proc/self/maps) or linked into the executable.
_PROBE = (
    "import platform, sys\n"
    "try:\n"
    "    maps = open('/proc/self/maps').read()\n"
    "    libpython = 'shared' if 'libpython' in maps else 'static'\n"
    "except OSError:\n"
    "    libpython = 'unknown'\n"
    "print(sys.executable)\n"
    "print(platform.python_version())\n"
    "print(libpython)\n"
)


class InterpreterError(Exception):
    """An interpreter that cannot be probed or cannot get the proxy installed."""


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str
    libpython: str  # "shared", "static" or "unknown"

    @property
    def label(self) -> str:
        """How the benchmark's rows name it, e.g. `python 3.11.2, static libpython`."""
        return f"python {self.version}, {self.libpython} libpython"


def parse_probe(output: str) -> Interpreter:
    lines = [line.strip() for line in output.strip().splitlines()]
    if len(lines) != 3 or not all(lines):
        raise InterpreterError(f"unexpected answer from the interpreter: {output[-200:]!r}")
    return Interpreter(executable=lines[0], version=lines[1], libpython=lines[2])


def probe(python: str) -> Interpreter:
    """Run `python` once to ask it what it is."""
    try:
        result = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as error:
        raise InterpreterError(f"cannot run {python}: {error}") from error
    if result.returncode != 0:
        raise InterpreterError(f"{python} failed: {result.stderr.strip()[-300:]}")
    return parse_probe(result.stdout)


def this_interpreter() -> Interpreter:
    """The one running the benchmark, which runs the code on PYTHONPATH by default."""
    return probe(sys.executable)


def source_files(repo: Path) -> list[Path]:
    """The checkout's files as a clone would have them, plus new files not ignored: no build
    output, compiled extensions or caches (`git ls-files`)."""
    result = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise InterpreterError(f"git ls-files failed in {repo}: {result.stderr.decode()[-300:]}")
    names = [name for name in result.stdout.decode().split("\0") if name]
    return [Path(name) for name in names if (repo / name).is_file()]


def copy_sources(repo: Path, target: Path) -> Path:
    """`source_files(repo)` copied under `target`; returns `target`."""
    for name in source_files(repo):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target / name)
    return target


def install(python: str, repo: Path, directory: Path) -> Path:
    """A venv of `python` in `directory` with the proxy installed from a copy of `repo`'s files
    by that venv's pip; returns the venv's interpreter."""
    source = copy_sources(repo, directory / "source")
    venv = directory / "venv"
    _run([python, "-m", "venv", str(venv)], f"{python} -m venv (Debian: apt-get install "
         "python3-venv; the build needs the interpreter's headers too, python3-dev)")  # fmt: skip
    venv_python = venv / "bin" / "python"
    _run([str(venv_python), "-m", "pip", "install", "-q", str(source)],
         f"pip install of the proxy into {venv}")  # fmt: skip
    return venv_python


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InterpreterError(f"{what}: {error}") from error
    if result.returncode != 0:
        raise InterpreterError(f"{what} failed: {(result.stdout + result.stderr)[-600:]}")

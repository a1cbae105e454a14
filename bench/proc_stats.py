"""CPU time and peak memory of a process and all its descendants, from /proc (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcSample:
    """utime+stime (s) summed over a process tree, and the sum of each process's VmHWM (kB)."""

    pids: tuple[int, ...]
    cpu_s: float
    hwm_kb: int


def parse_stat(text: str) -> tuple[int, float]:
    """(parent pid, utime+stime in seconds) from the text of /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])  # field 4 of proc(5)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15
    return ppid, (utime + stime) / CLOCK_TICKS


def parse_hwm_kb(status_text: str) -> int:
    """VmHWM (peak resident set, kB) from the text of /proc/<pid>/status; 0 if absent."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        if text is not None:
            parents[int(entry.name)] = parse_stat(text)[0]
    return parents


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    """`root` and every process below it, given pid -> parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(tree)


def sample(root: int) -> ProcSample:
    """CPU and peak RSS of `root` and its descendants now."""
    return sample_pids(descendants(root, _parents()))


def sample_pids(pids: Iterable[int]) -> ProcSample:
    cpu_s, hwm_kb, alive = 0.0, 0, []
    for pid in pids:
        stat = _read(PROC / str(pid) / "stat")
        status = _read(PROC / str(pid) / "status")
        if stat is None or status is None:
            continue
        alive.append(pid)
        cpu_s += parse_stat(stat)[1]
        hwm_kb += parse_hwm_kb(status)
    return ProcSample(tuple(alive), cpu_s, hwm_kb)

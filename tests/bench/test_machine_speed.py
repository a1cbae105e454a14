"""The benchmark's machine-speed yardstick (bench/machine_speed.py) and its report column."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from bench import machine_speed, report
from tests.bench.test_vs_kamailio import _run


def test_the_workload_is_fixed_work() -> None:
    # the same checksum every time and on any machine: the index times the same work
    assert machine_speed.workload(3) == machine_speed.workload(3)
    assert machine_speed.workload(400) == machine_speed.workload()
    assert machine_speed.workload(800) != machine_speed.workload(400)


def test_the_index_is_the_best_of_its_repeats_in_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    # process times read around three runs of the workload: they took 3, 1 and 2 s
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])
    monkeypatch.setattr(time, "process_time", lambda: next(clock))
    assert machine_speed.speed_index_ms(3) == 1000.0
    clock = iter([5.0, 5.5])
    assert machine_speed.speed_index_ms(0) == 500.0  # at least one run


def test_the_index_is_taken_on_every_cpu_and_the_affinity_given_back() -> None:
    allowed = os.sched_getaffinity(0)
    figures = machine_speed.speed_by_cpu(1)
    assert len(figures) == len(allowed) and all(figure > 0.0 for figure in figures)
    assert os.sched_getaffinity(0) == allowed


def test_the_table_shows_each_cpus_speed_before_and_after_each_run(tmp_path: Path) -> None:
    run = dataclasses.replace(
        _run("kamailio", 8.0), speed_before_ms=(2.31, 4.19), speed_after_ms=(2.3, 4.214)
    )
    cells = report.markdown_table([run, _run("kamailio", 8.0)]).splitlines()
    column = report.COLUMNS.index("machine speed ms per CPU, before / after")
    measured = [cell.strip() for cell in cells[2].split("|")[1:-1]]
    unmeasured = [cell.strip() for cell in cells[3].split("|")[1:-1]]
    assert measured[column] == "2.31 · 4.19 / 2.30 · 4.21"
    assert unmeasured[column] == "-"  # results written before the column existed
    meta = {"date": "D", "command": "C", "machine": "M", "remarks": []}
    report.write_json(tmp_path / "r.json", [run], meta)
    assert report.runs_from_json((tmp_path / "r.json").read_text()) == [run]


def test_results_of_one_figure_per_run_still_read() -> None:
    # bench/results/20261203T104928Z.json: one figure (the benchmark process's CPU) per side
    item = {**dataclasses.asdict(_run("kamailio", 8.0)), "speed_before_ms": 4.29,
            "speed_after_ms": 2.33}  # fmt: skip
    run = report.runs_from_json(json.dumps({"runs": [item]}))[0]
    assert (run.speed_before_ms, run.speed_after_ms) == ((4.29,), (2.33,))

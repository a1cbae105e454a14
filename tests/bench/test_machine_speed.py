"""The benchmark's machine-speed yardstick (bench/machine_speed.py) and its report column."""

from __future__ import annotations

import dataclasses

from bench import machine_speed, report
from tests.bench.test_vs_kamailio import _run


def test_the_workload_is_fixed_work() -> None:
    # the same checksum every time and on any machine: the index times the same work
    assert machine_speed.workload(3) == machine_speed.workload(3)
    assert machine_speed.workload(400) == machine_speed.workload()
    assert machine_speed.workload(800) != machine_speed.workload(400)


def test_the_index_is_the_best_of_its_repeats_in_ms() -> None:
    one, several = machine_speed.speed_index_ms(1), machine_speed.speed_index_ms(5)
    assert one > 0.0 and several > 0.0
    assert machine_speed.speed_index_ms(0) > 0.0  # at least one run


def test_the_table_shows_the_speed_before_and_after_each_run() -> None:
    run = dataclasses.replace(_run("kamailio", 8.0), speed_before_ms=4.8, speed_after_ms=5.125)
    cells = report.markdown_table([run, _run("kamailio", 8.0)]).splitlines()
    column = report.COLUMNS.index("machine speed ms before / after")
    measured = [cell.strip() for cell in cells[2].split("|")[1:-1]]
    unmeasured = [cell.strip() for cell in cells[3].split("|")[1:-1]]
    assert measured[column] == "4.80 / 5.12"
    assert unmeasured[column] == "-"  # results written before the column existed

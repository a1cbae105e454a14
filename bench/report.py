"""The benchmark's outputs: a markdown table, a JSON file of the raw numbers, a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.ladder import RunResult

BASELINE = "baseline"
README_BEGIN = "<!-- BEGIN performance table -->"
README_END = "<!-- END performance table -->"

COLUMNS = (
    "transport", "calls/s", "system", "attempted", "ok", "failed", "failed %", "of which 503 shed",
    "failed among admitted", "INVITE→503 p50/p99 ms", "retrans",
    "caller-ID check failures", "INVITE→100 p50/p99 ms", "INVITE→200 p50/p99 ms",
    "p99 INVITE→200 added ms", "CPU s per 1,000 calls", "peak RSS MB", "max GC pause ms",
    "GC pauses > 5 ms",
)  # fmt: skip


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _pair(first: float | None, second: float | None, digits: int) -> str:
    return f"{_num(first, digits)} / {_num(second, digits)}"


def added_p99(run: RunResult, baselines: Mapping[tuple[str, float], RunResult]) -> float | None:
    """p99 INVITE->200 of `run` minus the baseline's at the same transport and rate."""
    base = baselines.get((run.transport, run.rate))
    if run.system == BASELINE or base is None:
        return None
    if run.invite_200_p99_ms is None or base.invite_200_p99_ms is None:
        return None
    return run.invite_200_p99_ms - base.invite_200_p99_ms


def baselines_of(runs: Sequence[RunResult]) -> dict[tuple[str, float], RunResult]:
    return {(r.transport, r.rate): r for r in runs if r.system == BASELINE}


def row(run: RunResult, baselines: Mapping[tuple[str, float], RunResult]) -> list[str]:
    own = run.system != BASELINE
    digits = 2 if run.latency_source == "capture" else 0  # SIPp's own timers tick in 4 ms
    mark = "" if run.latency_source == "capture" else " (SIPp)"
    return [
        run.transport, _num(run.rate), run.system, _num(run.attempted), _num(run.ok),
        _num(run.failed), _num(run.failed_pct, 2), _num(run.shed), _num(run.failed_admitted),
        _pair(run.invite_503_p50_ms, run.invite_503_p99_ms, 2) if run.invite_503_p50_ms is not None
        else "-",
        _num(run.retransmissions),
        _num(run.check_failures), _pair(run.invite_100_p50_ms, run.invite_100_p99_ms, digits),
        _pair(run.invite_200_p50_ms, run.invite_200_p99_ms, digits) + mark,
        _num(added_p99(run, baselines), digits),
        _num(run.cpu_s_per_1000_calls, 2) if own else "-",
        _num(run.peak_rss_mb, 1) if own else "-",
        _num(run.gc_max_pause_ms, 1), _num(run.gc_pauses_over_5ms),
    ]  # fmt: skip


def markdown_table(runs: Sequence[RunResult]) -> str:
    baselines = baselines_of(runs)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(run, baselines)) + " |" for run in runs]
    return "\n".join(lines)


def notes_of(runs: Sequence[RunResult]) -> list[str]:
    return [f"- {r.system} {r.transport} {r.rate:g}/s: {r.notes}" for r in runs if r.notes]


def markdown(runs: Sequence[RunResult], meta: Mapping[str, Any]) -> str:
    lines = [
        "# callerid-proxy vs Kamailio",
        "",
        f"Run {meta['date']} on {meta['machine']}; `{meta['command']}`.",
        "",
        markdown_table(runs),
        "",
        *[f"- {line}" for line in meta.get("remarks", [])],
        *notes_of(runs),
    ]
    return "\n".join(lines).rstrip() + "\n"


def write_json(path: Path, runs: Sequence[RunResult], meta: Mapping[str, Any]) -> None:
    data = {"meta": dict(meta), "runs": [
        asdict(r) | {"failed_pct": r.failed_pct, "failed_admitted": r.failed_admitted}
        for r in runs
    ]}  # fmt: skip
    path.write_text(json.dumps(data, indent=2) + "\n")


def runs_from_json(text: str) -> list[RunResult]:
    fields = set(RunResult.__dataclass_fields__)
    return [RunResult(**{k: v for k, v in item.items() if k in fields})
            for item in json.loads(text)["runs"]]  # fmt: skip


def plot(path: Path, runs: Sequence[RunResult]) -> None:
    """Calls/s against failed calls (%) and CPU per call, one line per system and transport."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (failures, cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(dict.fromkeys(r.system for r in runs))
    colours = {name: f"C{index}" for index, name in enumerate(names)}  # one colour per system
    series = sorted({(r.system, r.transport) for r in runs},
                    key=lambda pair: (names.index(pair[0]), pair[1]))  # fmt: skip
    for system, transport in series:
        points = sorted((r for r in runs if (r.system, r.transport) == (system, transport)),
                        key=lambda r: r.rate)  # fmt: skip
        udp = transport == "udp"
        style = {"color": colours[system], "marker": "o" if udp else "s",
                 "linestyle": "-" if udp else "--", "label": f"{system} ({transport})"}
        rates = [r.rate for r in points]
        failures.plot(rates, [r.failed_pct or 0.0 for r in points], **style)
        if system != BASELINE:
            cpu.plot(rates, [r.cpu_s_per_1000_calls or 0.0 for r in points], **style)
    failures.set(xlabel="offered calls/s", ylabel="failed calls (%)", title="Failed calls")
    cpu.set(xlabel="offered calls/s", ylabel="CPU s per 1,000 calls (= ms per call)",
            title="CPU per call (all processes of the system)")  # fmt: skip
    for axes in (failures, cpu):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def update_readme(readme: Path, table: str, meta: Mapping[str, Any]) -> bool:
    """Replace the table between the README's performance markers; False if they are absent."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    remarks = "".join(f"- {remark}\n" for remark in meta.get("remarks", []))
    body = f"\n{meta['date']}, {meta['machine']}, `{meta['command']}`:\n\n{table}\n\n{remarks}"
    readme.write_text(text[: start + len(README_BEGIN)] + body + text[end:])
    return True

"""The benchmark's outputs: a markdown table, a JSON file of the raw numbers, a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.ladder import RunResult
from bench.recovery import RecoveryResult

BASELINE = "baseline"
README_BEGIN = "<!-- BEGIN performance table -->"
README_END = "<!-- END performance table -->"

COLUMNS = (
    "transport", "calls/s", "system", "attempted", "ok", "failed", "failed %", "of which 503 shed",
    "failed among admitted", "INVITE→503 p50/p99 ms", "retrans",
    "caller-ID check failures", "INVITE→100 p50/p99 ms", "INVITE→200 p50/p99 ms",
    "p99 INVITE→200 added ms", "CPU s per 1,000 calls", "peak RSS MB", "max GC pause ms",
    "GC pauses > 5 ms", "machine speed ms per CPU, before / after",
)  # fmt: skip


RECOVERY_COLUMNS = (
    "transport", "system", "overload calls/s", "overload attempted", "overload ok",
    "overload 503 shed", "overload failed among admitted", "overload INVITE→503 p99 ms",
    "then calls/s x s",
    "started s after", "attempted", "ok", "failed", "503s", "retrans", "INVITE→200 p99 ms",
    "first ok s after", "last failed s after",
)  # fmt: skip
RECOVERY_INTRO = (
    "Recovery after overload: one process of each system (no restart) takes the overload "
    "rate for the ladder's duration, then, once that SIPp PBX side has ended, a fresh SIPp "
    "pair offers the normal rate; the columns from \"started s after\" on are that second "
    "phase alone, its times in seconds after the overload's last call was placed (to 0.1 s; "
    "\"-\" under \"last failed\": none failed)."
)


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _pair(first: float | None, second: float | None, digits: int) -> str:
    return f"{_num(first, digits)} / {_num(second, digits)}"


def _speeds(before: Sequence[float] | None, after: Sequence[float] | None) -> str:
    """Each CPU's speed index before, then after: "2.31 · 4.19 / 2.30 · 4.21"."""
    if before is None or after is None:
        return "-"
    return " / ".join(" · ".join(_num(value, 2) for value in side) for side in (before, after))


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
        _speeds(run.speed_before_ms, run.speed_after_ms),
    ]  # fmt: skip


def markdown_table(runs: Sequence[RunResult]) -> str:
    baselines = baselines_of(runs)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(run, baselines)) + " |" for run in runs]
    return "\n".join(lines)


def notes_of(runs: Sequence[RunResult]) -> list[str]:
    return [f"- {r.system} {r.transport} {r.rate:g}/s: {r.notes}" for r in runs if r.notes]


def recovery_row(result: RecoveryResult) -> list[str]:
    over, after = result.overload, result.recovery
    digits = 2 if after.latency_source == "capture" else 0
    mark = "" if after.latency_source == "capture" else " (SIPp)"
    p99 = after.invite_200_p99_ms
    return [
        result.transport, result.system, _num(over.rate), _num(over.attempted), _num(over.ok),
        _num(over.shed), _num(over.failed_admitted), _num(over.invite_503_p99_ms, 2),
        f"{_num(after.rate)} x {after.duration_s:g}", _num(result.started_after_s, 1),
        _num(after.attempted), _num(after.ok), _num(after.failed), _num(after.shed),
        _num(after.retransmissions), _num(p99, digits) + (mark if p99 is not None else ""),
        _num(result.first_ok_after_s, 1), _num(result.last_failed_after_s, 1),
    ]  # fmt: skip


def recovery_table(results: Sequence[RecoveryResult]) -> str:
    lines = ["| " + " | ".join(RECOVERY_COLUMNS) + " |", "|" + "---|" * len(RECOVERY_COLUMNS)]
    lines += ["| " + " | ".join(recovery_row(result)) + " |" for result in results]
    return "\n".join(lines)


def recovery_notes(results: Sequence[RecoveryResult]) -> list[str]:
    lines = [f"- {r.system} {r.transport}: overload {r.overload_why}" for r in results]
    for r in results:
        for phase, run in (("overload", r.overload), ("then", r.recovery)):
            if run.notes:
                lines.append(f"- {r.system} {r.transport} {phase}: {run.notes}")
    return lines


def tables(runs: Sequence[RunResult], recoveries: Sequence[RecoveryResult] = ()) -> str:
    """The ladder table, and the recovery table with its notes when there are recovery runs."""
    text = markdown_table(runs)
    if recoveries:
        notes = "\n".join(recovery_notes(recoveries))
        text += f"\n\n{RECOVERY_INTRO}\n\n{recovery_table(recoveries)}\n\n{notes}"
    return text


def markdown(
    runs: Sequence[RunResult], meta: Mapping[str, Any], recoveries: Sequence[RecoveryResult] = ()
) -> str:
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
    if recoveries:
        lines += ["", "## Recovery after overload", "", RECOVERY_INTRO, "",
                  recovery_table(recoveries), "", *recovery_notes(recoveries)]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def _run_json(run: RunResult) -> dict[str, Any]:
    return asdict(run) | {"failed_pct": run.failed_pct, "failed_admitted": run.failed_admitted}


def write_json(
    path: Path, runs: Sequence[RunResult], meta: Mapping[str, Any],
    recoveries: Sequence[RecoveryResult] = (),
) -> None:  # fmt: skip
    data = {
        "meta": dict(meta),
        "runs": [_run_json(r) for r in runs],
        "recovery": [asdict(r) | {"overload": _run_json(r.overload),
                                  "recovery": _run_json(r.recovery)} for r in recoveries],
    }  # fmt: skip
    path.write_text(json.dumps(data, indent=2) + "\n")


def _run_of(item: Mapping[str, Any]) -> RunResult:
    fields = set(RunResult.__dataclass_fields__)
    values = {k: v for k, v in item.items() if k in fields}
    # JSON lists, one figure per CPU; files of 2026-12-03 10:49 UTC hold one number per side
    for key in ("speed_before_ms", "speed_after_ms"):
        speed = values.get(key)
        if speed is not None:
            values[key] = tuple(speed) if isinstance(speed, list) else (float(speed),)
    return RunResult(**values)


def runs_from_json(text: str) -> list[RunResult]:
    return [_run_of(item) for item in json.loads(text)["runs"]]


def recoveries_from_json(text: str) -> list[RecoveryResult]:
    """The recovery runs of a results file (none in files written before they existed)."""
    fields = set(RecoveryResult.__dataclass_fields__)
    out = []
    for item in json.loads(text).get("recovery", []):
        values = {k: v for k, v in item.items() if k in fields}
        values |= {"overload": _run_of(item["overload"]), "recovery": _run_of(item["recovery"])}
        out.append(RecoveryResult(**values))
    return out


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

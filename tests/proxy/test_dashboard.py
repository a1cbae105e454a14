"""deploy/grafana-dashboard.json draws only series the proxy exposes: every metric name in its
queries is one a running proxy's GET /metrics declares."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.proxy_process import proxy_with_admin

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
EXAMPLE_RULES = ROOT / "rules" / "example.yaml"
METRIC = re.compile(r"\b(callerid_proxy_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count"), "info": ("_info",)}


def queried_names(dashboard: dict[str, Any]) -> set[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in METRIC.findall(expr)}


def exposed_names(exposition: str) -> set[str]:
    """Series names of a Prometheus text exposition, from its TYPE lines (so a counter that
    has no sample yet still counts) and its samples."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            base = family.removesuffix("_info") if kind == "gauge" else family
            names.add(family)
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ()))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_exposed_names_follow_the_exposition_format() -> None:
    text = (
        "# TYPE callerid_proxy_requests counter\n"
        "# TYPE callerid_proxy_lat_seconds histogram\n"
        'callerid_proxy_lat_seconds_bucket{le="+Inf"} 0.0\n'
        "# TYPE callerid_proxy_rules_info gauge\n"
        'callerid_proxy_rules_info{version="v1"} 1.0\n'
    )
    names = exposed_names(text)
    assert {"callerid_proxy_requests_total", "callerid_proxy_lat_seconds_bucket",
            "callerid_proxy_lat_seconds_count", "callerid_proxy_rules_info"} <= names
    assert "callerid_proxy_requests_bucket" not in names


def test_the_dashboard_is_grafana_json_with_a_prometheus_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def scrape(admin: str, wanted: set[str], timeout_s: float = 10.0) -> set[str]:
    """Scrape until every wanted name shows (gauges appear after the first lag sample), bounded."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while True:
        with opener.open(f"http://{admin}/metrics", timeout=5) as response:
            names = exposed_names(response.read().decode())
        if wanted <= names or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def test_every_metric_the_dashboard_queries_is_exposed_by_the_proxy(tmp_path: Path) -> None:
    wanted = queried_names(json.loads(DASHBOARD.read_text()))
    with proxy_with_admin(EXAMPLE_RULES, tmp_path / "p.pid") as (_, admin):
        exposed = scrape(admin, wanted)
    assert sorted(wanted - exposed) == []

"""The Grafana dashboard has the rows operations asked for, every panel a query, a unit
and the provisioned data source, quantiles computed the right way; and the provisioning files
point where the compose file mounts the dashboard and where Prometheus listens."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.support import DEPLOY, load_yaml

GRAFANA = DEPLOY / "grafana"
ROWS = [
    "Ingestion",
    "Journeys",
    "Models",
    "Recommendations",
    "Webhooks",
    "Experiments",
    "Dependencies",
]
# Grafana unit ids used here (Grafana's valueFormats): a typo would show raw numbers.
UNITS = {"eps", "ops", "reqps", "s", "short", "percentunit", "none", "bytes"}
# histogram_quantile(q, sum by (le[, ...]) (rate(<name>_bucket...[...])))
QUANTILE = re.compile(
    r"histogram_quantile\(\s*0?\.\d+\s*,\s*sum by \(le\b[^)]*\)\s*\(rate\(\w+_bucket"
)


def _dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "parcours.json").read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_rows_in_order_each_with_panels() -> None:
    panels = _dashboard()["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    kinds = [p["type"] for p in panels]

    assert rows == ROWS
    assert kinds[0] == "row"
    assert "row" not in {kinds[i + 1] for i, kind in enumerate(kinds[:-1]) if kind == "row"}
    assert kinds[-1] != "row"


def test_dashboard_panels_have_queries_units_titles_and_data_source() -> None:
    for panel in _panels():
        title = panel["title"]
        assert title, panel["id"]
        assert panel.get("description"), title
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target["datasource"] == panel["datasource"], title


def test_dashboard_quantiles_aggregate_buckets_by_le() -> None:
    queries = [t["expr"] for p in _panels() for t in p["targets"]]
    quantiles = [q for q in queries if "histogram_quantile" in q]

    assert len(quantiles) >= 10
    for query in quantiles:
        assert QUANTILE.search(query), query


def test_dashboard_ids_unique_and_panels_laid_out_without_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        columns = range(pos["x"], pos["x"] + pos["w"])
        area = {(x, y) for x in columns for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area

    assert len(ids) == len(set(ids))


def test_provisioned_datasource_is_the_dashboard_default_and_compose_prometheus() -> None:
    provisioning = GRAFANA / "provisioning"
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    (variable,) = _dashboard()["templating"]["list"]
    compose = load_yaml(DEPLOY / "docker-compose.yml")["services"]

    assert (source["type"], source["uid"]) == ("prometheus", variable["current"]["value"])
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["prometheus"]["ports"]


def test_dashboard_provider_reads_the_directory_compose_mounts() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "parcours.yml")["providers"]
    volumes = load_yaml(DEPLOY / "docker-compose.yml")["services"]["grafana"]["volumes"]
    mounts = dict(volume.split(":")[:2] for volume in volumes)

    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert provider["type"] == "file"

"""Every `parcours_*` name in the dashboard, the alert rules and their unit tests is a series
service/metrics.py really exports (histograms as `_bucket/_sum/_count`, counters as `_total`),
with label matchers it really has, so renaming a metric breaks this test, not the alerts."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.support import DEPLOY, exported_series, load_yaml, metric_names

PROMETHEUS = DEPLOY / "prometheus"
# A selector: the name, then optionally its matchers (whose quoted values may hold braces, as
# route templates do) and a range.
SELECTOR = re.compile(
    r'\b(parcours_[a-z0-9_]*[a-z0-9])\s*(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?\s*(\[)?'
)
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
RANGE_FUNCTION = re.compile(r"\b(?:rate|irate|increase)\(\s*(parcours_[a-z0-9_]+)")
CUMULATIVE = ("_total", "_bucket", "_sum", "_count")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "parcours.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _rule_texts() -> list[str]:
    texts = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                texts += [rule["expr"], *rule.get("annotations", {}).values()]
    return texts


def _rule_queries() -> list[str]:
    return [
        rule["expr"]
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def _test_series() -> list[str]:
    return [
        series["series"]
        for path in sorted((PROMETHEUS / "tests").glob("*.yml"))
        for case in load_yaml(path)["tests"]
        for series in case["input_series"]
    ]


SOURCES = {
    "dashboard": _dashboard_queries,
    "rules": _rule_texts,
    "rule-tests": _test_series,
}


@pytest.mark.parametrize("source", SOURCES)
def test_referenced_metric_names_exported_by_service_metrics(source: str) -> None:
    texts = SOURCES[source]()
    referenced = set().union(*(metric_names(text) for text in texts))

    assert len(referenced) >= 5, f"found almost no metric names in the {source}"
    assert referenced - set(exported_series()) == set(), "not exported by service/metrics.py"


@pytest.mark.parametrize("source", SOURCES)
def test_label_matchers_name_labels_the_metric_has(source: str) -> None:
    series = exported_series()
    for text in SOURCES[source]():
        for name, matchers, _ in SELECTOR.findall(text):
            labels = set(MATCHER.findall(matchers))
            assert labels - series.get(name, set()) - TARGET_LABELS == set(), f"{name}{matchers}"


@pytest.mark.parametrize("queries", [_dashboard_queries, _rule_queries], ids=["dashboard", "rules"])
def test_counters_and_histograms_only_read_as_rates(queries: object) -> None:
    # A raw counter is meaningless across restarts, and rate() of a gauge is meaningless always.
    for query in queries():  # type: ignore[operator]
        for name in RANGE_FUNCTION.findall(query):
            assert name.endswith(CUMULATIVE), f"rate of a gauge: {name} in {query}"
        for name, _, has_range in SELECTOR.findall(query):
            if name.endswith(CUMULATIVE):
                assert has_range, f"{name} read without a range in {query}"


def test_selector_parsing_reads_names_matchers_and_ranges() -> None:
    query = 'sum(rate(parcours_http_requests_total{route="/v1/{id:path}", job!="x"}[5m]))'

    assert metric_names(query) == {"parcours_http_requests_total"}
    ((name, matchers, has_range),) = SELECTOR.findall(query)
    assert (name, MATCHER.findall(matchers), has_range) == (
        "parcours_http_requests_total",
        ["route", "job"],
        "[",
    )
    assert "parcours_no_such_metric_total" not in exported_series()
    assert "parcours_http_request_duration_seconds_bucket" in exported_series()

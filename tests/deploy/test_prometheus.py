"""The alert rules and Prometheus's config pass promtool, and every alert has unit tests that
show it firing and staying quiet: run by the real promtool, since a rule that parses can still
never fire."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.deploy.conftest import Run
from tests.deploy.support import DEPLOY, load_yaml

PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
REQUIRED_ALERTS = {
    "ParcoursConsumerLagGrowing",
    "ParcoursDeadLetterRateHigh",
    "ParcoursWebhookFailureRateHigh",
    "ParcoursModelSnapshotStale",
    "ParcoursModelQualityDropping",
    "ParcoursApiReadLatencyOverBudget",
    "ParcoursApiIntakeLatencyOverBudget",
    "ParcoursApiNotReady",
}


def _alerts() -> dict[str, dict[str, object]]:
    return {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_rule_files_promtool_check_succeeds(promtool: str, run: Run) -> None:
    result = run(promtool, "check", "rules", *RULE_FILES)

    assert RULE_FILES
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_promtool_check_succeeds_and_loads_the_rules(
    promtool: str, run: Run
) -> None:
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    for path in RULE_FILES:
        assert path.name in result.stdout


def test_alert_unit_tests_promtool_test_succeeds(promtool: str, run: Run) -> None:
    result = run(promtool, "test", "rules", *TEST_FILES)

    assert TEST_FILES
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_broken_rule_promtool_check_fails(promtool: str, run: Run, tmp_path: Path) -> None:
    # The tool really judges: an expression that does not parse is refused.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]})
    )

    result = run(promtool, "check", "rules", broken)

    assert result.returncode != 0


def test_alert_set_covers_the_operations_requirements() -> None:
    assert set(_alerts()) >= REQUIRED_ALERTS


def test_every_alert_has_severity_summary_and_description() -> None:
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name  # type: ignore[index]
        assert {"summary", "description"} <= set(rule["annotations"]), name  # type: ignore[arg-type]


def test_every_alert_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        document = load_yaml(path)
        loaded = {(path.parent / name).resolve() for name in document["rule_files"]}
        assert loaded == {rule.resolve() for rule in RULE_FILES}, path.name
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])

    assert set(_alerts()) - firing == set(), "alerts never shown firing"
    assert set(_alerts()) - quiet == set(), "alerts never shown staying quiet"


def test_dashboard_queries_promtool_parse(promtool: str, run: Run, tmp_path: Path) -> None:
    # promtool has no query checker, but it parses recording rules: one per dashboard query.
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "parcours.json").read_text())
    queries = [
        target["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = run(promtool, "check", "rules", path)

    assert len(queries) > 40
    assert result.returncode == 0, result.stdout + result.stderr

"""The `parcours` command's own behaviour: clear errors, schema output, replay reports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from models.access import split
from models.events import event_json_schema
from service.bus import ensure_topics
from service.cli import app
from service.settings import get_settings
from tests.conftest import make_settings
from tests.support import journey_stream, read_until_quiet, settings_env

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each invocation reads its environment afresh, as a new process would."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_check_map_malformed_file_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    shop = tmp_path / "shop.yaml"
    shop.write_text("name: shop\nstages: [a, b]\nrules:\n  - to: c\n    events: [page_view]\n")

    result = runner.invoke(app, ["check-map", str(shop)])

    assert result.exit_code == 2
    assert f"{shop}:4: rules[0].to: unknown stage 'c'" in result.output


def test_check_map_builtin_b2b_summarizes_stages() -> None:
    result = runner.invoke(app, ["check-map", "b2b"])

    assert result.exit_code == 0
    assert "research -> site_visit -> call_booked" in result.output


def test_api_with_malformed_map_fails_at_start_up(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nstages: [a]\n")

    result = runner.invoke(app, ["api"], env={"PARCOURS_JOURNEY_MAP": str(broken)})

    assert result.exit_code == 2
    assert f"{broken}:2: stages:" in result.output


def test_schema_matches_the_published_file() -> None:
    result = runner.invoke(app, ["schema"])

    assert result.exit_code == 0
    assert orjson.loads(result.output) == event_json_schema()
    published = Path(__file__).parents[2] / "models" / "event.schema.json"
    assert orjson.loads(published.read_bytes()) == orjson.loads(result.output)


def test_replay_jsonl_sends_valid_events_and_reports_bad_lines(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, redis_url)
    asyncio.run(ensure_topics(settings.kafka, [settings.kafka.events_topic]))
    events = journey_stream(customers=5, events=30)
    lines = [orjson.dumps(e).decode() for e in events]
    lines.insert(3, '{"event_id": "broken"')
    lines.insert(10, orjson.dumps({**events[0], "type": "teleport"}).decode())
    recorded = tmp_path / "events.jsonl"
    recorded.write_text("\n".join(lines) + "\n")

    result = runner.invoke(app, ["replay", str(recorded)], env=settings_env(settings))

    assert result.exit_code == 0, result.output
    assert "sent 30 events for 5 customers" in result.output
    assert "2 invalid lines skipped" in result.output
    assert "line 4: invalid_json" in result.output
    assert "line 11: unknown_event_type" in result.output
    records = asyncio.run(
        read_until_quiet(kafka_bootstrap, settings.kafka.events_topic, settings.kafka.partitions)
    )
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        e["event_id"] for e in events
    )


def test_replay_without_kafka_configured_explains_how_to_get_one(tmp_path: Path) -> None:
    recorded = tmp_path / "events.jsonl"
    recorded.write_text(orjson.dumps(journey_stream(customers=1, events=1)[0]).decode())

    result = runner.invoke(app, ["replay", str(recorded)], env={"PARCOURS_KAFKA_BOOTSTRAP": ""})

    assert result.exit_code == 2
    assert "PARCOURS_KAFKA_BOOTSTRAP is not set" in result.output


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_replay_unknown_format_is_rejected(fmt: str) -> None:
    result = runner.invoke(app, ["replay", "sample", "--format", fmt])

    assert result.exit_code == 2
    assert "unknown format" in result.output


def test_consume_with_kafka_unreachable_exits_1_with_one_line(tmp_path: Path) -> None:
    from service.embedded import free_port

    env = {
        "PARCOURS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "PARCOURS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PARCOURS_KAFKA_REQUEST_TIMEOUT_MS": "1000",
        "PARCOURS_CONSUMER_METRICS_PORT": "0",
    }

    result = runner.invoke(app, ["consume"], env=env)

    assert result.exit_code == 1
    assert "error: cannot reach Kafka at 127.0.0.1:" in result.output


def test_keys_create_list_revoke_against_redis(kafka_bootstrap: str, redis_url: str) -> None:
    env = settings_env(make_settings(kafka_bootstrap, redis_url))

    created = runner.invoke(app, ["keys", "create", "crm sync", "--scope", "read"], env=env)
    token = created.stdout.strip()
    parts = split(token)
    assert created.exit_code == 0, created.output
    assert parts is not None
    key_id, _ = parts
    get_settings.cache_clear()
    listed = runner.invoke(app, ["keys", "list"], env=env)
    get_settings.cache_clear()
    revoked = runner.invoke(app, ["keys", "revoke", key_id], env=env)
    get_settings.cache_clear()
    missing = runner.invoke(app, ["keys", "revoke", "ffffffffffff"], env=env)
    get_settings.cache_clear()
    bad_scope = runner.invoke(app, ["keys", "create", "x", "--scope", "root"], env=env)

    row = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert "active" in row
    assert "read" in row
    assert "crm sync" in row
    assert token not in listed.stdout
    assert revoked.exit_code == 0
    assert "revoked" in revoked.stdout
    assert missing.exit_code == 2
    assert bad_scope.exit_code == 2


def test_keys_without_redis_configured_says_so() -> None:
    result = runner.invoke(app, ["keys", "list"], env={"PARCOURS_REDIS_URL": ""})

    assert result.exit_code == 2
    assert "PARCOURS_REDIS_URL" in result.output


def test_experiments_apply_a_file_then_list_them(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    env = settings_env(make_settings(kafka_bootstrap, redis_url))
    good = tmp_path / "experiments.yaml"
    good.write_text(
        "experiments:\n"
        "  cart-offer:\n"
        "    decision: webhook:cart.abandoned\n"
        "    variants: [{name: none}, {name: free_shipping, params: {offer: free_shipping}}]\n"
        "    policy: thompson\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "experiments:\n  shelf:\n    decision: custom:shelf\n    variants: [{name: a}]\n"
    )
    changed = tmp_path / "changed.yaml"
    changed.write_text(good.read_text().replace("free_shipping,", "ten_percent,"))

    get_settings.cache_clear()
    applied = runner.invoke(app, ["experiments", "apply", str(good)], env=env)
    get_settings.cache_clear()
    again = runner.invoke(app, ["experiments", "apply", str(good)], env=env)
    get_settings.cache_clear()
    refused = runner.invoke(app, ["experiments", "apply", str(bad)], env=env)
    get_settings.cache_clear()
    renamed = runner.invoke(app, ["experiments", "apply", str(changed)], env=env)
    get_settings.cache_clear()
    listed = runner.invoke(app, ["experiments", "list"], env=env)

    assert applied.exit_code == 0, applied.output
    assert applied.stdout.startswith("written")
    assert again.stdout.startswith("unchanged")
    assert refused.exit_code == 2
    assert f"{bad}: experiments.shelf.variants:" in refused.output
    assert renamed.exit_code == 1
    assert "exists with other variants" in renamed.output
    assert listed.stdout.split() == [
        "cart-offer", "active", "webhook:cart.abandoned", "thompson", "none,free_shipping"
    ]  # fmt: skip

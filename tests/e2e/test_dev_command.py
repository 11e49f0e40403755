"""`parcours dev --replay sample`, the README's first command, on the embedded default."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service.embedded import free_port
from tests.e2e.conftest import EMBEDDED, Role, start_dev
from tests.support import sample_journeys

pytestmark = pytest.mark.slow


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), 0.5).close()
    except OSError:
        return False
    return True


def test_dev_with_sample_replay_serves_live_journeys_and_stops_cleanly(
    roles: list[Role], tmp_path: Path, promtool: str
) -> None:
    port = free_port()
    dev = start_dev(roles, tmp_path, port, EMBEDDED)
    output = dev.output()
    assert re.search(r"Replayed 4170 events for \d+ customers", output)
    customer = re.search(r"/v1/customers/([^/]+)/journey", output.split("Try: curl")[1]).group(1)
    kafka = re.search(r"PARCOURS_KAFKA_BOOTSTRAP=(\S+)", output).group(1)

    expected = sample_journeys()
    buyer = next(c for c, j in expected.items() if j.purchases.count and c != customer)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
        for who in (customer, buyer):
            deadline = time.monotonic() + 60
            while (response := api.get(f"/v1/customers/{who}/journey")).status_code == 404:
                assert time.monotonic() < deadline, "journey never appeared"
                time.sleep(0.2)
            while response.json()["events_applied"] < expected[who].events_applied:
                assert time.monotonic() < deadline, "journey never caught up"
                time.sleep(0.2)
                response = api.get(f"/v1/customers/{who}/journey")
            journey = response.json()
            scores = journey.pop("scores")  # depend on the models, not on the fold
            history = journey.pop("score_history")
            assert journey == expected[who].model_dump(
                mode="json", exclude={"scores", "score_history"}
            )
            assert history, "the consumer kept the scores it attached"
            assert history[-1]["at"] <= scores["at"]  # a point only when the view changed
            assert set(scores["next_stage"]["probabilities"]) >= {"exit", journey["stage"]}
        assert api.get("/v1/models").json()["models"]
        assert api.get("/readyz").json()["status"] == "ready"
        shown = api.get(f"/v1/customers/{buyer}/recommendations", params={"context": "home"})
        assert shown.status_code == 200
        assert shown.json()["known"] is True
        hook = api.post("/v1/webhooks", json={"url": f"http://localhost:{free_port()}/hook"})
        assert hook.status_code == 201, hook.text  # dev allows local receivers
    workers = re.search(r"workers: (.*)", output).group(1).split(", ")
    exposed = {url: httpx.get(url, timeout=5).text for url in workers}
    exposed[f"http://127.0.0.1:{port}/metrics"] = httpx.get(
        f"http://127.0.0.1:{port}/metrics", timeout=5
    ).text
    assert any("parcours_webhook_" in text for text in exposed.values()), (
        "the dispatcher runs and serves its metrics"
    )
    for url, text in exposed.items():  # every role's exposition follows Prometheus' conventions
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, f"{url}: {checked.stdout}{checked.stderr}"

    dev.process.send_signal(signal.SIGINT)
    assert dev.process.wait(60) == 0
    assert not _listening(f"127.0.0.1:{port}"), "the API must be stopped"
    assert not _listening(kafka), "the embedded broker must be stopped"

"""`parcours api --workers 2`: a scrape reaches one worker, yet counts every worker's requests
(prometheus-client's multiprocess mode), and the merged exposition still passes promtool."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx

from service.embedded import free_port
from tests.conftest import make_settings
from tests.e2e.conftest import Role, wait_healthy
from tests.support import settings_env

REQUESTS = 60


def _served(text: str, route: str) -> float:
    pattern = rf'^parcours_http_requests_total{{[^}}]*route="{re.escape(route)}"[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


def test_two_workers_report_every_request_in_one_scrape(
    kafka_bootstrap: str, redis_url: str, roles: list[Role], tmp_path: Path, promtool: str
) -> None:
    settings = make_settings(kafka_bootstrap, redis_url)
    port = free_port()
    env = settings_env(settings) | {"PARCOURS_API_METRICS_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_12345.db").write_bytes(b"left by an earlier run")
    api = Role(["api", "--workers", "2", "--port", str(port)], env, tmp_path / "api.log")
    roles.append(api)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(api, base)
    time.sleep(2)  # both workers up: uvicorn starts them together, the first answer may be one

    for _ in range(REQUESTS):  # a new connection each time, so both workers take some
        assert httpx.get(f"{base}/v1/schema/event", timeout=5).status_code == 200
    scrapes = [httpx.get(f"{base}/metrics", timeout=5).text for _ in range(6)]

    workers_counting = list((tmp_path / "metrics").glob("counter_*.db"))
    assert len(workers_counting) == 2, f"both workers served requests: {workers_counting}"
    counts = {_served(text, "/v1/schema/event") for text in scrapes}
    assert counts == {REQUESTS}, f"each scrape must count every worker's requests, saw {counts}"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=scrapes[0], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (tmp_path / "metrics" / "counter_12345.db").exists(), "stale files are cleared"
    assert api.terminate() == 0

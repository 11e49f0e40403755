"""The journey map page in headless Chromium, against `parcours dev --replay sample`: the
stages, the flow and a customer's timeline render with the numbers the API returns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.embedded import free_port
from tests.e2e.conftest import EMBEDDED, Role, start_dev
from tests.support import sample_journeys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def content(self) -> str:
        return "".join(self.text).strip()

    def inside(self, ancestor: Element) -> bool:
        node = self.parent
        while node is not None:
            if node is ancestor:
                return True
            node = node.parent
        return False


class Dom(HTMLParser):
    """Every element of a page with its attributes, parent and text (its descendants' too)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self._open[-1] if self._open else None
        element = Element(tag, {k: v or "" for k, v in attrs}, parent)
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text.append(data)

    def having(self, cls: str, within: Element | None = None) -> list[Element]:
        return [
            e for e in self.elements
            if cls in e.classes and (within is None or e.inside(within))
        ]  # fmt: skip

    def one(self, cls: str, within: Element | None = None) -> Element:
        found = self.having(cls, within)
        assert len(found) == 1, f"{len(found)} elements of class {cls!r}"
        return found[0]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "no chromium on PATH: scripts/install-test-tools installs Debian's package"
    return found


def _browse(url: str, profile: Path, *extra: str) -> str:
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _settled(api: httpx.Client, customers: int) -> dict[str, Any]:
    """The analytics once every replayed customer is counted and two reads agree."""
    deadline = time.monotonic() + 90
    previous: dict[str, Any] | None = None
    while True:
        assert time.monotonic() < deadline, f"the replay was never applied: {previous}"
        now = {
            route: api.get(f"/v1/analytics/{route}").json()
            for route in ("funnel", "transitions", "live")
        }
        live = sum(s["customers"] for s in now["live"]["stages"])
        arrived = sum(t["count"] for t in now["transitions"]["transitions"] if t["from"] == "new")
        if live == arrived == customers and now == previous:
            return now
        previous = now
        time.sleep(0.5)


BANNER = {
    "decision": "custom:banner",
    "variants": [{"name": "plain"}, {"name": "bold", "params": {"style": "bold"}}],
    "success": ["purchase"],
    "window_s": 3600,
}


def _exposed(api: httpx.Client, name: str, customers: int) -> dict[str, Any]:
    """The experiment's results once the trainer's snapshot holds every exposure."""
    deadline = time.monotonic() + 90
    while True:
        result: dict[str, Any] = api.get(f"/v1/experiments/{name}").json()
        if result["exposures"] == customers:
            return result
        assert time.monotonic() < deadline, f"the exposures never reached a snapshot: {result}"
        time.sleep(1)


def _prediction_shown(predictions: dict[str, Any]) -> tuple[str, str]:
    """The predicted next stage and abandonment risk as the page writes them."""
    odds = predictions["next_stage"]
    likely = odds["most_likely"]
    assert likely, "a next stage is predicted"
    abandonment = predictions["abandonment"]
    risk = "no open cart" if abandonment is None else f"{100 * abandonment['risk']:.1f}%"
    return (
        f"predicted next{likely} ({100 * odds['probabilities'][likely]:.1f}%)",
        f"abandonment risk{risk}",
    )


def _score_shown(point: dict[str, Any]) -> str:
    """A score history point as the timeline writes it."""
    risk = (
        "no open cart" if point["risk"] is None else f"abandonment risk {100 * point['risk']:.1f}%"
    )
    return f"{point['next_stage']} ({100 * point['probability']:.1f}%) {risk}"


def _js(number: float) -> str:
    """A number as JavaScript's String() writes it (integers without a decimal point)."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _artifacts() -> Path:
    where = Path(os.environ.get("PARCOURS_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_journey_map_page_renders_the_replayed_numbers_and_a_customer_timeline(
    roles: list[Role], tmp_path: Path
) -> None:
    port = free_port()
    # the sample spans ten minutes: a one-minute horizon lets the watermark decide exits
    short = {"PARCOURS_ANALYTICS_HORIZON_S": "60", "PARCOURS_ANALYTICS_ALLOWED_LATENESS_S": "0"}
    dev = start_dev(roles, tmp_path, port, EMBEDDED | short)
    replayed = re.search(r"Replayed \d+ events for (\d+) customers", dev.output())
    assert replayed, dev.output()
    expected = sample_journeys()
    who = max(expected, key=lambda c: (len(expected[c].stage_history), c))
    journey_expected = expected[who]
    assert len(journey_expected.stage_history) >= 3, "a customer who moved through stages"

    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as api:
        numbers = _settled(api, int(replayed.group(1)))
        assert api.put("/v1/experiments/banner", json=BANNER).status_code == 201
        deciding = sorted(expected)[:10]
        variants = {
            c: api.post("/v1/experiments/banner/decisions", json={"customer_id": c}).json()
            for c in deciding
        }
        experiment = _exposed(api, "banner", len(deciding))
        friction = api.get("/v1/analytics/friction").json()
        scored = [api.get(f"/v1/customers/{who}/predictions").json()]
        html = _browse(f"{base}/map?customer={who}", tmp_path / "profile", "--dump-dom")
        journey = api.get(f"/v1/customers/{who}/journey").json()
        scored.append(api.get(f"/v1/customers/{who}/predictions").json())
        models = api.get("/v1/models").json()
        assert _settled(api, int(replayed.group(1))) == numbers, "the numbers moved meanwhile"
    dom = Dom(html)

    status = next(e for e in dom.elements if e.attrs.get("id") == "status").content()
    assert status.startswith("updated "), status  # every route answered
    assert status.endswith("every 5 s"), status

    # The stages as columns, in the map's order, with the range's funnel and the live gauges.
    now = {s["stage"]: s["customers"] for s in numbers["live"]["stages"]}
    columns = dom.having("stage")
    assert [c.attrs["data-stage"] for c in columns] == [
        s["stage"] for s in numbers["funnel"]["stages"]
    ]
    assert sum(now.values()) > 0
    assert sum(s["exits"] for s in numbers["funnel"]["stages"]) > 0, "exits were decided"
    assert any(s["moved_on"] for s in numbers["funnel"]["stages"])
    for column, stage in zip(columns, numbers["funnel"]["stages"], strict=True):
        name = stage["stage"]
        assert [e.content() for e in dom.elements if e.tag == "h3" and e.inside(column)] == [name]
        assert dom.one("now", column).content() == str(now[name]), name
        assert dom.one("entered", column).content() == str(stage["entered"]), name
        assert dom.one("customers", column).content() == str(stage["customers"]), name
        assert dom.one("moved-on", column).content() == str(stage["moved_on"]), name
        assert dom.one("exits", column).content() == str(stage["exits"]), name
        before_exit = stage["time_before_exit"]["median_s"]
        assert column.attrs["data-before-exit"] == ("" if before_exit is None else _js(before_exit))
        assert (before_exit is None) == (stage["exits"] == 0), name

    # The flow: a node per column and a band per move, exits included, labelled with its count.
    transitions = numbers["transitions"]
    nodes = [e.attrs["data-node"] for e in dom.elements if "data-node" in e.attrs]
    assert nodes == transitions["nodes"]
    assert nodes[-1] == "exit"
    bands = {(b.attrs["data-from"], b.attrs["data-to"]): b for b in dom.having("band")}
    moves = {(t["from"], t["to"]): t["count"] for t in transitions["transitions"] if t["count"]}
    assert set(bands) == set(moves)
    assert len(moves) >= 5, "a flow with several bands"
    for move, count in moves.items():
        band = bands[move]
        assert band.attrs["data-count"] == str(count)
        assert any(e.tag == "path" and e.inside(band) for e in dom.elements), move
        label = [e.content() for e in dom.elements if e.tag == "text" and e.inside(band)]
        assert label == [str(count)], move

    # Carts, friction and model quality.
    assert dom.one("open-carts").content() == str(numbers["live"]["open_carts"])
    assert dom.one("value-at-risk").content() == f"{numbers['live']['value_at_risk']:.2f}"
    assert {e.attrs["data-model"] for e in dom.having("model")} == {
        m["name"] for m in models["models"]
    }
    assert "Before exits" in html
    assert "Before abandoned carts" in html
    exit_rows = [e for e in dom.having("touch") if e.attrs["data-kind"] == "exit"]
    assert [int(e.attrs["data-count"]) for e in exit_rows] == [
        t["count"]
        for t in friction["exits"]["touchpoints"][:8]  # the page shows the top 8
    ]
    assert exit_rows, "the touchpoints before exits are ranked"
    changes = next(e for e in dom.elements if e.attrs.get("id") == "changes").content()
    assert changes.startswith("No jump since"), changes  # a steady ten minutes: nothing flagged

    # The experiment: its variants' exposures as the API counts them, from the decisions made.
    block = next(e for e in dom.having("experiment") if e.attrs["data-experiment"] == "banner")
    rows = {r.attrs["data-variant"]: r for r in dom.having("variant", block)}
    shown_variants = [v["variant"] for v in experiment["variants"]]
    assert list(rows) == shown_variants == ["plain", "bold"]
    for row in experiment["variants"]:
        made = sum(1 for d in variants.values() if d["variant"] == row["variant"])
        assert row["exposures"] == made
        assert dom.one("exposures", rows[row["variant"]]).content() == str(made)
        assert dom.one("resolved", rows[row["variant"]]).content() == "0"  # windows still open

    # The customer picked by the URL: their stage changes and touchpoints, oldest first.
    assert dom.one("summary").attrs["data-customer"] == who
    assert journey["stage_history"] == journey_expected.model_dump(mode="json")["stage_history"]
    entries = dom.having("entry")
    changes = [e for e in entries if e.attrs["data-kind"] == "stage-change"]
    touches = [e for e in entries if e.attrs["data-kind"] == "touchpoint"]
    assert [
        (e.attrs["data-at"], e.content().split("→ ", 1)[1].split(" by ")[0]) for e in changes
    ] == [(v["entered_at"], v["stage"]) for v in journey["stage_history"]]
    assert [e.attrs["data-at"] for e in touches] == [t["at"] for t in journey["touchpoints"]]
    predicted = [e for e in entries if e.attrs["data-kind"] == "prediction"]
    assert journey["score_history"], "the consumer kept the scores over time"
    assert [
        (e.attrs["data-at"], e.content().split("predicted next: ", 1)[1]) for e in predicted
    ] == [(p["at"], _score_shown(p)) for p in journey["score_history"]]
    assert [e.attrs["data-at"] for e in entries] == sorted(e.attrs["data-at"] for e in entries)
    assert dom.one("current-stage").content() == f"stage now{journey['stage']}"
    # Recomputed per request: a model snapshot published while the page loads may change them.
    shown = (dom.one("next-stage").content(), dom.one("risk").content())
    assert any(_prediction_shown(p) == shown for p in scored), (shown, scored)

    # A screenshot, kept for a look at the page as a person sees it.
    shot = tmp_path / "journey-map.png"
    _browse(
        f"{base}/map?customer={who}", tmp_path / "profile-shot",
        f"--screenshot={shot}", "--window-size=1400,1000",
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000, "a page drawn, not a blank one"
    shutil.copyfile(shot, _artifacts() / "journey-map.png")

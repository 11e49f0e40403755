"""Accessory ("frequently bought together") quality: co-occurrence against popularity, replayed.

Each dataset is turned once into a time-ordered script of operations: *predict* (a purchase,
asked before anything about it is learned), *basket* (co-occurrence learns a basket) and
*popular* (popularity learns a weighted item). Every model then runs the very same script, so
all of them are scored on exactly the same prediction points.

At a prediction point a model ranks 10 items, never a seed nor an excluded item. Targets are
the purchased items that are not seeds and not excluded. Per point: HR@10 = 1 if a target is
in the top 10; NDCG@10 = DCG / ideal DCG with binary relevance (gain 1 / log2(rank + 1)).
Recall@10 is micro-averaged over target items.

* REES46 (2 h 50 min clickstream): a purchase row is a point. `strict`: seeds are the
  session's viewed and carted products and the customer's earlier purchases, most recent
  first; the purchased product is a target only if not among them (almost never: it was
  nearly always viewed first). `held-out`: the same seeds minus the purchased product, which is
  the target. Baskets learned when a session closes (30 min idle, or the end of the slice):
  its purchased products, and its carted products. Popularity learns every event, weighted
  by `EVENT_WEIGHTS`, with `category_code` (or `category_id`) as its category.
* Instacart: event times come from `models.datasets.instacart_events` (every customer starts
  on 2017-01-01 at the order's hour of day; later orders add `days_since_prior_order`; cart
  lines 1 s apart), and orders are replayed in that synthetic global time order. Point: an
  order by a returning customer. Seeds: the products of the customer's last `--seed-baskets`
  orders, most recent first; excluded: everything the customer bought before; targets: the
  order's products new to the customer (`history`). `cart completion`, the in-cart use of
  the model: seeds are the first half of the order in cart order (`add_to_cart_order`),
  targets the second half. Then the order is learned as one basket.

    python -m bench.accessory_quality --runs 3
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import statistics
import sys
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from models.cooccurrence import CoOccurrence, Measure
from models.datasets import instacart_events, rees46_event
from models.trending import EVENT_WEIGHTS, Trending

DATA = Path("/work/shared/data")
REES46 = DATA / "rees46_multicat_2019oct_first3h" / "events.csv.gz"
INSTACART = DATA / "instacart_orders_sample" / "order_lines.csv.gz"
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
SESSION_IDLE_MS = 30 * 60_000
TOP = 10


class Predict(NamedTuple):
    at_ms: int
    seeds: tuple[str, ...]
    exclude: frozenset[str]
    targets: frozenset[str]


class Basket(NamedTuple):
    at_ms: int
    items: tuple[str, ...]


class Popular(NamedTuple):
    at_ms: int
    item: str
    category: str | None
    weight: float


Op = Predict | Basket | Popular


@dataclass
class Ranker:
    """Co-occurrence (if `model`) topped up from popularity (if `popular`), or either alone."""

    model: CoOccurrence | None
    popular: Trending | None

    def learns(self, op: Op) -> bool:
        """Whether `op` is one this ranker learns from (the ops its learn throughput counts)."""
        if isinstance(op, Basket):
            return self.model is not None
        return isinstance(op, Popular) and self.popular is not None

    def learn(self, op: Op) -> None:
        if isinstance(op, Basket) and self.model is not None:
            self.model.learn_basket(op.items, op.at_ms)
        elif isinstance(op, Popular) and self.popular is not None:
            self.popular.learn(op.item, op.category, op.weight, op.at_ms)

    def rank(self, op: Predict) -> list[str]:
        ranked: list[str] = []
        if self.model is not None:
            recs = self.model.recommend(op.seeds, op.at_ms, exclude=op.exclude, n=TOP)
            ranked = [item for item, _, _ in recs]
        if self.popular is not None and len(ranked) < TOP:
            banned = op.exclude.union(op.seeds, ranked)
            more = self.popular.top(op.at_ms, TOP - len(ranked), exclude=banned)
            ranked += [item for item, _ in more]
        return ranked


Factory = Callable[[], Ranker]


@dataclass
class Scores:
    points: int = 0
    targets: int = 0
    hit_points: int = 0
    hit_items: int = 0
    ndcg: float = 0.0
    empty: int = 0

    def add(self, ranked: list[str], targets: frozenset[str]) -> None:
        gains = [1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked) if item in targets]
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(targets), TOP)))
        self.points += 1
        self.targets += len(targets)
        self.hit_points += bool(gains)
        self.hit_items += len(gains)
        self.ndcg += sum(gains) / ideal
        self.empty += not ranked

    def row(self) -> list[str]:
        p = max(self.points, 1)
        return [str(self.points), str(self.targets), f"{self.hit_points / p:.4f}",
                f"{self.hit_items / max(self.targets, 1):.4f}", f"{self.ndcg / p:.4f}",
                f"{self.empty / p:.1%}"]  # fmt: skip


def replay(script: list[Op], ranker: Ranker) -> Scores:
    """Run `ranker` over the script: score at each prediction point, learn everything else."""
    scores = Scores()
    for op in script:
        if isinstance(op, Predict):
            scores.add(ranker.rank(op), op.targets)
        else:
            ranker.learn(op)
    return scores


# --- REES46 --------------------------------------------------------------------------------


@dataclass
class _Session:
    last_ms: int
    seen: list[str] = field(default_factory=list)
    carted: list[str] = field(default_factory=list)
    bought: list[str] = field(default_factory=list)


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _close(session: _Session) -> Iterator[Basket]:
    for items in (session.bought, session.carted):
        if items:
            yield Basket(session.last_ms, tuple(dict.fromkeys(items)))


def rees46_script(path: Path, *, held_out: bool) -> list[Op]:
    """REES46 rows as a script (module docstring: `strict` or `held-out` seeds)."""
    with gzip.open(path, "rt", newline="") as f:
        events = sorted((rees46_event(row) for row in csv.DictReader(f)),
                        key=lambda e: e["timestamp"])  # fmt: skip
    script: list[Op] = []
    sessions: OrderedDict[str, _Session] = OrderedDict()
    earlier: dict[str, list[str]] = defaultdict(list)
    for event in events:
        at, product = _ms(event["timestamp"]), event["properties"]["product_id"]
        while sessions and next(iter(sessions.values())).last_ms < at - SESSION_IDLE_MS:
            script += _close(sessions.popitem(last=False)[1])
        session = sessions.pop(event["session_id"], None) or _Session(at)
        sessions[event["session_id"]], session.last_ms = session, at
        customer = earlier[event["customer_id"]]
        if event["type"] == "purchase":
            context = [*reversed(session.seen + session.carted), *reversed(customer)]
            seeds = tuple(s for s in dict.fromkeys(context) if not (held_out and s == product))
            if seeds and product not in seeds:
                script.append(Predict(at, seeds, frozenset(), frozenset({product})))
            session.bought.append(product)
            customer.append(product)
        else:
            (session.carted if event["type"] == "add_to_cart" else session.seen).append(product)
        category = event["properties"].get("category")
        script.append(Popular(at, product, category, EVENT_WEIGHTS[event["type"]]))
    for session in sessions.values():
        script += _close(session)
    return script


# --- Instacart -----------------------------------------------------------------------------


def _instacart_orders(path: Path) -> list[tuple[int, str, str, list[str], int]]:
    """`(start_ms, order_id, user, products in cart order, purchase_ms)`, in time order."""
    with gzip.open(path, "rt", newline="") as f:
        orders, lines = [], []
        for event in instacart_events(csv.DictReader(f)):
            if event["type"] == "add_to_cart":
                lines.append(event)
                continue
            start = _ms(lines[0]["timestamp"]) if lines else _ms(event["timestamp"])
            items = [line["properties"]["product_id"] for line in lines]
            order_id = event["properties"]["order_id"]
            orders.append((start, order_id, event["customer_id"], items, _ms(event["timestamp"])))
            lines = []
    return sorted(orders, key=lambda o: (o[0], int(o[1])))


def instacart_script(path: Path, *, seed_baskets: int, completion: bool) -> list[Op]:
    """Instacart orders as a script: `history` or cart `completion` points (module docstring)."""
    script: list[Op] = []
    history: dict[str, list[list[str]]] = defaultdict(list)
    bought: dict[str, set[str]] = defaultdict(set)
    for start, _, user, items, done in _instacart_orders(path):
        if completion:
            half = len(items) // 2
            point = Predict(start, tuple(items[:half]), frozenset(), frozenset(items[half:]))
        else:
            recent = [item for basket in reversed(history[user][-seed_baskets:]) for item in basket]
            seeds = tuple(dict.fromkeys(recent))
            point = Predict(start, seeds, frozenset(bought[user]), frozenset(items) - bought[user])
        if point.seeds and point.targets - set(point.seeds):
            script.append(point._replace(targets=point.targets - set(point.seeds)))
        script += [Popular(done, item, None, EVENT_WEIGHTS["purchase"]) for item in items]
        script.append(Basket(done, tuple(items)))
        history[user].append(items)
        bought[user].update(items)
    return script


# --- models, throughput, report ------------------------------------------------------------


def rankers(cooc_half_life_ms: int, trend_half_life_ms: int, capacity: int) -> dict[str, Factory]:
    """Every compared model, as a factory of fresh rankers."""

    def cooc(measure: Measure, support: float, fill: bool = False) -> Factory:
        return lambda: Ranker(
            CoOccurrence(half_life_ms=cooc_half_life_ms, measure=measure, min_support=support),
            Trending(trend_half_life_ms, capacity) if fill else None,
        )

    trend = _duration(trend_half_life_ms)
    return {
        "popular so far (no decay)": lambda: Ranker(None, Trending(None, capacity)),
        f"trending (half-life {trend})": lambda: Ranker(
            None, Trending(trend_half_life_ms, capacity)
        ),
        "co-occurrence cosine, support 0.5": cooc("cosine", 0.5),
        "co-occurrence cosine, support 2": cooc("cosine", 2.0),
        "co-occurrence lift, support 2": cooc("lift", 2.0),
        "cosine support 2 + trending fill": cooc("cosine", 2.0, fill=True),
    }


def _duration(ms: int) -> str:
    return f"{ms // DAY_MS} d" if ms >= DAY_MS else f"{ms // HOUR_MS} h"


def throughput(script: list[Op], factory: Factory, runs: int) -> tuple[float, float]:
    """Median learn ops/s (the ops the model learns from) and recommend ops/s (up to 3,000
    points, asked after all the learning) over `runs` fresh models."""
    points = [op for op in script if isinstance(op, Predict)][:3000]
    rates = []
    for _ in range(runs):
        model = factory()
        learns = [op for op in script if model.learns(op)]
        started = time.perf_counter()
        for op in learns:
            model.learn(op)
        learned = time.perf_counter()
        for point in points:
            model.rank(point)
        done = time.perf_counter()
        rates.append((len(learns) / (learned - started), len(points) / (done - learned)))
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report(
    name: str, script: list[Op], factories: dict[str, Factory], runs: int, speed: list[list[str]]
) -> list[str]:
    """Quality table of one script; appends throughput rows to `speed` if `runs`."""
    baskets = sum(isinstance(op, Basket) for op in script)
    popular = sum(isinstance(op, Popular) for op in script)
    head = ["model", "points", "target items", "HR@10", "recall@10", "NDCG@10", "empty lists"]
    rows = []
    for label, factory in factories.items():
        rows.append([label, *replay(script, factory()).row()])
        if runs:
            learn, rank = throughput(script, factory, runs)
            speed.append([name, label, f"{learn:,.0f}", f"{rank:,.0f}"])
    title = f"### {name}: {baskets:,} baskets and {popular:,} popularity events learned"
    return [title, "", table(head, rows), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dataset", choices=("rees46", "instacart", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (0: skip)")
    parser.add_argument("--seed-baskets", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=2000, help="Trending top_n per scope")
    args = parser.parse_args()
    speed: list[list[str]] = []
    out = [f"Command: `python -m bench.accessory_quality {' '.join(sys.argv[1:])}`".strip(), ""]
    if args.dataset in ("rees46", "both"):
        factories = rankers(30 * DAY_MS, HOUR_MS, args.capacity)
        for held_out in (False, True):
            script = rees46_script(REES46, held_out=held_out)
            name = "REES46 " + ("held-out" if held_out else "strict")
            out += report(name, script, factories, args.runs if held_out else 0, speed)
    if args.dataset in ("instacart", "both"):
        factories = rankers(30 * DAY_MS, 14 * DAY_MS, args.capacity)
        for completion in (False, True):
            script = instacart_script(
                INSTACART, seed_baskets=args.seed_baskets, completion=completion
            )
            name = "Instacart " + ("cart completion" if completion else "history")
            out += report(name, script, factories, args.runs, speed)
    if speed:
        out += [f"### Throughput (median of {args.runs} runs)", ""]
        out += [table(["script", "model", "learn ops/s", "recommend ops/s"], speed)]
    print("\n".join(out))


if __name__ == "__main__":
    main()

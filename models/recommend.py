"""What to show a customer now: the recommendation actions, ranked for the page asking.

Pure composition: the caller brings the journey (or None for an unknown customer), the scores
at request time, the catalog's candidates (`Candidates`: accessories and trending products,
already excluding what is in the cart or recently bought) and the journey map's actions.

Ranking. Each action type has a priority per `context` (on the cart page the reminder comes
first, on a product page the accessories). The answer first takes the best action of every
type that has one, in priority order, so a small `limit` still mixes types; then fills up
with the remaining candidates in the same order. Within a type, actions are by score (each
in [0, 1]: the abandonment risk, the co-occurrence cosine, the predicted next stage's
probability, the trending score relative to the top one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple, get_args

from models.journeymap import EXIT, JourneyMap
from models.state import JourneyState

ActionType = Literal["abandoned_cart_reminder", "accessory", "next_best_action", "trending"]
ACTION_TYPES: Final[tuple[ActionType, ...]] = get_args(ActionType)
Context = Literal["product_page", "cart", "home", "email"]
CONTEXTS: Final[tuple[Context, ...]] = get_args(Context)

PRIORITIES: Final[Mapping[Context, tuple[ActionType, ...]]] = {
    "cart": ("abandoned_cart_reminder", "accessory", "next_best_action", "trending"),
    "product_page": ("accessory", "next_best_action", "abandoned_cart_reminder", "trending"),
    "home": ("abandoned_cart_reminder", "next_best_action", "accessory", "trending"),
    "email": ("abandoned_cart_reminder", "accessory", "next_best_action", "trending"),
}
"""Action types in the order each context shows them."""

SeedKind = Literal["viewed", "cart", "bought"]
ACCESSORY_REASONS: Final[Mapping[str, str]] = {
    "viewed": "bought_with_viewed_product",
    "cart": "bought_with_cart_item",
    "bought": "complements_past_purchase",
}
REASONS: Final[tuple[str, ...]] = (
    "cart_at_risk",
    "cart_idle",
    *ACCESSORY_REASONS.values(),
    "stage_action",
    "predicted_next_stage_action",
    "cold_start",
    "trending_in_category",
    "trending_overall",
)
"""Every machine-readable `reason` an action can carry."""


class Accessory(NamedTuple):
    """A co-occurrence candidate: `product_id` goes with `seed` (the viewed, carted or bought)."""

    product_id: str
    score: float
    seed: str
    seed_kind: str


class Candidates(NamedTuple):
    """What the catalog proposes for one request, best first, exclusions already applied."""

    accessories: Sequence[Accessory] = ()
    trending: Sequence[tuple[str, float]] = ()
    category: str | None = None
    trending_in_category: Sequence[tuple[str, float]] = ()
    exclude: frozenset[str] = frozenset()
    """Never suggested as trending: the product on the page, and products bought recently."""


class Item(NamedTuple):
    """A product an action concerns (cart lines carry quantity and price)."""

    product_id: str
    quantity: int | None = None
    price: float | None = None
    category: str | None = None


_NO_DETAILS: Final[Mapping[str, Any]] = MappingProxyType({})


class Action(NamedTuple):
    """One thing to show: its type, a score in [0, 1], the items, why, and type-specific detail.

    A named tuple, not a frozen dataclass: a request builds several, and a frozen dataclass's
    constructor sets each field through `object.__setattr__`."""

    type: ActionType
    score: float
    reason: str
    items: tuple[Item, ...] = ()
    details: Mapping[str, Any] = _NO_DETAILS


@dataclass(frozen=True, slots=True)
class Scores:
    """The models' view of the journey at request time (None: no cart, or not scored)."""

    risk: float | None = None
    next_stage: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """When a cart deserves a reminder: risk at least `risk_threshold`, or idle that long."""

    risk_threshold: float = 0.5
    idle_cart_ms: int = 30 * 60_000


def recommend(
    state: JourneyState | None,
    now_ms: int,
    journey_map: JourneyMap,
    candidates: Candidates,
    *,
    scores: Scores = Scores(),
    context: Context = "home",
    limit: int = 10,
    policy: Policy = Policy(),
) -> list[Action]:
    """The ranked actions for this request; see the module docstring for the order."""
    order = PRIORITIES[context]
    pools: dict[ActionType, list[Action]] = {
        "abandoned_cart_reminder": _reminder(state, now_ms, scores, policy),
        "accessory": _accessories(candidates.accessories),
        "next_best_action": _next_best(state, journey_map, scores),
    }
    # Every other kind in the order takes one place first, so trending can fill no more than
    # the rest (and at least its own first place): build no more trending actions than that.
    others = sum(1 for kind, pool in pools.items() if pool and kind in order)
    trending = max(1, limit - others) if "trending" in order else 0
    taken = {a.product_id for a in candidates.accessories}
    pools["trending"] = _trending(candidates, taken, trending)
    chosen: dict[ActionType, list[Action]] = {kind: pools[kind][:1] for kind in order}
    room = limit - sum(map(len, chosen.values()))
    for kind in order:
        extra = pools[kind][1 : 1 + max(room, 0)]
        chosen[kind] += extra
        room -= len(extra)
    ranked = [action for kind in order for action in chosen[kind]]
    return ranked[:limit]


class Seeds(NamedTuple):
    """What a request's accessories grow from, and what they may never be."""

    seeds: tuple[tuple[str, SeedKind], ...]
    banned: frozenset[str]
    cart: frozenset[str]
    bought: frozenset[str]
    category: str | None


def seeds_of(
    state: JourneyState | None,
    product_id: str | None,
    category: str | None,
    *,
    max_seeds: int,
    bought_window_ms: int,
) -> Seeds:
    """The viewed product, then the cart (last added first), then purchases (latest first),
    at most `max_seeds`; banned: every seed, the cart, what was bought within the window
    (event time, before the journey's last event). The category for trending is the asked
    one, else the one viewed most (ties: the smaller name)."""
    seeds: dict[str, SeedKind] = {}

    def add(item: str, kind: SeedKind) -> None:
        if len(seeds) < max_seeds and item not in seeds:
            seeds[item] = kind

    if product_id:
        add(product_id, "viewed")
    cart: frozenset[str] = frozenset()
    bought: set[str] = set()
    if state is not None:
        cart = frozenset(state.cart.items)
        for item in reversed(state.cart.items):
            add(item, "cart")
        since = state.last_event_at - bought_window_ms
        for recent in reversed(state.purchases.recent_products):
            if recent.at >= since:
                bought.add(recent.product_id)
            add(recent.product_id, "bought")
        if not category and state.category_views:
            views = state.category_views
            category = min(views, key=lambda name: (-views[name], name))
    banned = frozenset(seeds) | cart | bought
    return Seeds(tuple(seeds.items()), banned, cart, frozenset(bought), category or None)


def accessories_from(
    seeds: Seeds, neighbours: Mapping[str, Sequence[tuple[str, float]]], n: int
) -> list[Accessory]:
    """Candidates scored by their summed cosine over the seeds, credited to the strongest
    seed (the first on ties), best first (ties by id), never a banned product."""
    totals: dict[str, float] = {}
    credit: dict[str, tuple[float, int]] = {}
    for j, (seed, _) in enumerate(seeds.seeds):
        for item, score in neighbours.get(seed, ()):
            if item in seeds.banned:
                continue
            if item in totals:
                totals[item] += score
                if score > credit[item][0]:
                    credit[item] = (score, j)
            else:
                totals[item] = score
                credit[item] = (score, j)
    best = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [Accessory(item, total, *seeds.seeds[credit[item][1]]) for item, total in best]


def recommendation_id(action_type: str, request_id: str, rank: int) -> str:
    """`<type>:<request id>:<rank>`: unique per served action, and names its type when reported."""
    return f"{action_type}:{request_id}:{rank}"


def action_type_of(rec_id: str) -> str:
    """The action type a reported recommendation id names ('unknown' if it names none)."""
    head = rec_id.split(":", 1)[0]
    return head if head in ACTION_TYPES else "unknown"


def _reminder(
    state: JourneyState | None, now_ms: int, scores: Scores, policy: Policy
) -> list[Action]:
    if state is None or not state.cart.items:
        return []
    cart = state.cart
    idle_ms = max(now_ms - (cart.updated_at or state.last_event_at), 0)
    risk = scores.risk
    if risk is not None and risk >= policy.risk_threshold:
        reason, score = "cart_at_risk", risk
    elif idle_ms >= policy.idle_cart_ms:
        reason, score = "cart_idle", risk if risk is not None else 1.0
    else:
        return []
    items = tuple(
        Item(i.product_id, i.quantity, i.price, i.category)
        for i in sorted(cart.items.values(), key=lambda i: (-i.added_at, i.product_id))
    )
    last_channel = state.touchpoints[-1].channel if state.touchpoints else None
    details = {
        "cart_value": cart.value,
        "risk": risk,
        "idle_ms": idle_ms,
        "last_channel": last_channel,
    }
    return [Action("abandoned_cart_reminder", round(score, 6), reason, items, details)]


def _accessories(accessories: Sequence[Accessory]) -> list[Action]:
    return [
        Action(
            "accessory",
            round(min(a.score, 1.0), 6),
            ACCESSORY_REASONS.get(a.seed_kind, "bought_with_viewed_product"),
            (Item(a.product_id),),
            {"seed": a.seed},
        )
        for a in accessories
    ]


def _next_best(state: JourneyState | None, journey_map: JourneyMap, scores: Scores) -> list[Action]:
    stage = state.stage if state is not None else journey_map.initial_stage
    predicted: str | None = None
    probability = 1.0
    if state is not None and scores.next_stage:
        # the most likely move; "stay" (own stage) is not a move, so the action is the stage's
        predicted, probability = max(scores.next_stage.items(), key=lambda kv: (kv[1], kv[0]))
        if predicted == stage:
            predicted = None
    action = journey_map.action_for(stage, predicted)
    if action is None:
        return []
    if state is None:
        reason = "cold_start"
    elif action.next is not None:
        reason = "predicted_next_stage_action"
    else:
        reason = "stage_action"
    details = {
        "action": action.action,
        "description": action.description,
        "params": dict(action.params),
        "stage": stage,
        "predicted_next_stage": predicted,
        "leaving": predicted == EXIT,
    }
    return [Action("next_best_action", round(probability, 6), reason, (), details)]


def _trending(candidates: Candidates, taken: set[str], want: int) -> list[Action]:
    """Up to `want` trending actions: the category's first, then overall, no repeats."""
    actions: list[Action] = []
    seen = taken | candidates.exclude
    for reason, ranked in (
        ("trending_in_category", candidates.trending_in_category),
        ("trending_overall", candidates.trending),
    ):
        top = ranked[0][1] if ranked else 0.0
        category = candidates.category if reason == "trending_in_category" else None
        for product_id, score in ranked:
            if len(actions) >= want:
                return actions
            if product_id in seen:
                continue
            seen.add(product_id)
            relative = score / top if top > 0 else 0.0
            items = (Item(product_id, category=category),)
            actions.append(Action("trending", round(relative, 6), reason, items))
    return actions

"""Answering recommendation requests: one Redis round trip, then pure composition.

For a batch of customers, one pipelined call reads each journey and its catalog candidates
together (`service.catalog`); each journey is then scored at request time (abandonment risk
grows while a cart sits idle) and composed into ranked actions (`models.recommend`). "Now" is
event time: the newer of the journey's last event and the catalog's clock (the newest event
it learned), so a replay of old data is answered on its own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.journeymap import JourneyMap
from models.predictions import point
from models.recommend import (
    Candidates,
    Context,
    Policy,
    Scores,
    Seeds,
    accessories_from,
    recommend,
    seeds_of,
)
from models.state import JourneyState, decode_state
from service.api.recommendation_schemas import render_answer
from service.catalog import CatalogRead, CatalogStore
from service.catalog_cache import CatalogCache
from service.exposures import Exposed, Exposures
from service.metrics import ApiMetrics
from service.scoring import LiveScorer
from service.settings import RecommendSettings
from service.store import JourneyStore, split_value

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
TRENDING_SLACK = 5
"""Trending read beyond `limit`: the composer drops the viewed and recently bought products."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One customer's request: where the storefront is asking from."""

    customer_id: str
    context: Context
    limit: int
    product_id: str | None = None
    category: str | None = None


_Prepared = tuple[JourneyState | None, Candidates, int]
"""A request's journey, its catalog candidates, and the catalog's clock."""


class Recommender:
    """Builds recommendation answers; one instance per API process."""

    def __init__(
        self,
        settings: RecommendSettings,
        journey_map: JourneyMap,
        journeys: JourneyStore,
        catalog: CatalogStore,
        scorer: LiveScorer,
        metrics: ApiMetrics,
        cache: CatalogCache | None = None,
        exposures: Exposures | None = None,
    ) -> None:
        self._settings = settings
        self._map = journey_map
        self._journeys = journeys
        self._catalog = catalog
        self._scorer = scorer
        self._metrics = metrics
        self._cache = cache
        self._exposures = exposures
        self._bought_window_ms = int(settings.bought_window_days * DAY_MS)
        self._policy = Policy(
            risk_threshold=settings.risk_threshold,
            idle_cart_ms=int(settings.idle_cart_minutes * 60_000),
        )

    async def answer(self, asks: Sequence[Ask], request_id: str) -> list[dict[str, Any]]:
        """Answer bodies in request order; a batch's ids get `.<index>` after the request id."""
        if self._cache is not None:
            prepared = await self._from_cache(asks)
        else:
            prepared = await self._exact(asks)
        await self._scorer.refresh()
        version = self._scorer.version
        single = len(asks) == 1
        bodies = [
            self._compose(ask, state, candidates, clock_ms, rid, version)
            for i, (ask, (state, candidates, clock_ms)) in enumerate(
                zip(asks, prepared, strict=True)
            )
            for rid in [request_id if single else f"{request_id}.{i}"]
        ]
        if self._exposures is not None:
            await self._experiment(asks, [p[0] for p in prepared], bodies)
        return bodies

    async def _experiment(
        self,
        asks: Sequence[Ask],
        states: Sequence[JourneyState | None],
        bodies: list[dict[str, Any]],
    ) -> None:
        """Attach each customer's variants to the action types under test; record first
        exposures, and leave out the decisions whose exposure could not be recorded."""
        exposures = self._exposures
        assert exposures is not None
        await exposures.book.refresh()
        if not exposures.book.deciding("recommendation"):
            return  # the common case: nothing under test here, nothing to pay for
        new: list[Exposed] = []
        for ask, state, body in zip(asks, states, bodies, strict=True):
            if not exposures.eligible(ask.customer_id, state):
                continue
            at_ms = int(body["as_of"].timestamp() * 1000)
            channel = "email" if ask.context == "email" else "web"
            for action in body["recommendations"]:
                decisions = exposures.decide(
                    f"recommendation:{action['type']}", ask.customer_id, state
                )
                if decisions:
                    action["experiments"] = decisions
                    new += [Exposed(ask.customer_id, d, at_ms, channel) for d in decisions if d.new]
        failed = await exposures.record(new)
        for ask, body in zip(asks, bodies, strict=True):
            for action in body["recommendations"]:
                if "experiments" in action:
                    shown = [
                        d.public()
                        for d in action["experiments"]
                        if (ask.customer_id, d.experiment) not in failed
                    ]
                    action["experiments"] = shown or None

    async def _from_cache(self, asks: Sequence[Ask]) -> list[_Prepared]:
        """One MGET of the journeys; catalog entries from the cache, the stale ones fetched
        together in one script call."""
        assert self._cache is not None
        stored = await self._journeys.load_many([ask.customer_id for ask in asks])
        states = [decode_state(x.state) if x.state is not None else None for x in stored]
        plans = [
            self._plan(ask, self._personal(ask, state))
            for ask, state in zip(asks, states, strict=True)
        ]
        neighbours, trending = await self._cache.fetch(
            (seed for plan in plans for seed, _ in plan.seeds),
            [None, *(plan.category for plan in plans if plan.category)],
        )
        clock = self._cache.clock_ms
        prepared: list[_Prepared] = []
        for ask, state, plan in zip(asks, states, plans, strict=True):
            candidates = Candidates(
                accessories=accessories_from(plan, neighbours, ask.limit),
                trending=trending[None],
                category=plan.category,
                trending_in_category=trending.get(plan.category, ()) if plan.category else (),
                exclude=_not_trending(ask, plan),
            )
            prepared.append((state, candidates, clock))
        return prepared

    async def _exact(self, asks: Sequence[Ask]) -> list[_Prepared]:
        """Uncached: each journey and its candidates scored inside Redis, one script call each,
        pipelined."""
        s = self._settings
        reads = [
            CatalogRead(
                journey_key=self._journeys.key(ask.customer_id),
                product_id=ask.product_id,
                category=ask.category,
                max_seeds=s.max_seeds,
                per_seed=s.neighbours_per_seed,
                min_support=s.min_support,
                bought_window_ms=self._bought_window_ms,
                accessories=ask.limit,
                trending=ask.limit + TRENDING_SLACK,
            )
            for ask in asks
        ]
        prepared: list[_Prepared] = []
        for ask, view in zip(asks, await self._catalog.read(reads), strict=True):
            state = _journey(view.journey)
            personal = self._personal(ask, state)
            candidates = Candidates(
                # seeded by the journey in Redis: none for a customer who opted out
                accessories=view.accessories if personal is state else (),
                trending=view.trending,
                category=view.category,
                trending_in_category=view.category_trending,
                exclude=_not_trending(ask, self._plan(ask, personal)),
            )
            prepared.append((state, candidates, view.clock_ms))
        return prepared

    def _compose(
        self,
        ask: Ask,
        state: JourneyState | None,
        candidates: Candidates,
        clock_ms: int,
        rid: str,
        version: str,
    ) -> dict[str, Any]:
        now_ms = max(clock_ms, state.last_event_at if state else 0)
        personal = self._personal(ask, state)
        scores = self._scores(personal, now_ms)
        actions = recommend(
            personal,
            now_ms,
            self._map,
            candidates,
            scores=scores,
            context=ask.context,
            limit=ask.limit,
            policy=self._policy,
        )
        for action in actions:
            self._metrics.recommendations_of(action.type, ask.context).inc()
        logger.debug("%d recommendations (%s)", len(actions), ask.context)
        return render_answer(
            ask.customer_id,
            rid,
            known=state is not None,
            personalized=personal is not None,
            stage=state.stage if state else self._map.initial_stage,
            context=ask.context,
            as_of_ms=now_ms,
            model_version=version,
            actions=actions,
        )

    def _personal(self, ask: Ask, state: JourneyState | None) -> JourneyState | None:
        """The journey to personalize with: None for a customer who opted out or who is in
        the personalization holdout."""
        if self._exposures is not None and self._exposures.held_out(ask.customer_id):
            return None
        return _personal(state)

    def _plan(self, ask: Ask, state: JourneyState | None) -> Seeds:
        return seeds_of(
            state, ask.product_id, ask.category,
            max_seeds=self._settings.max_seeds, bought_window_ms=self._bought_window_ms,
        )  # fmt: skip

    def _scores(self, state: JourneyState | None, now_ms: int) -> Scores:
        """The models' view: the scores stored with the journey at its newest event, with the
        abandonment risk rescored at request time while a cart is open (it grows while the
        cart sits idle)."""
        if state is None:
            return Scores()
        scored = state.predictions or {}
        stored = scored.get("abandonment")
        risk = stored["risk"] if stored else None
        if state.cart.items:
            try:
                risk = self._scorer.risk_many([point(state, now_ms)])[0]
            except Exception:  # a model bug must not take the storefront's page down
                logger.exception("scoring failed; serving the risk stored with the journey")
        odds = scored.get("next_stage")
        return Scores(risk=risk, next_stage=odds["probabilities"] if odds else None)


def _not_trending(ask: Ask, plan: Seeds) -> frozenset[str]:
    """Never suggested as trending: the product on the page, the cart, recent purchases."""
    viewed = {ask.product_id} if ask.product_id else set()
    return plan.cart | plan.bought | viewed


def _personal(state: JourneyState | None) -> JourneyState | None:
    """The journey to personalize with: None for a customer who opted out."""
    return state if state is not None and state.personalization else None


def _journey(raw: bytes | None) -> JourneyState | None:
    if raw is None:
        return None
    _, body = split_value(raw)
    return decode_state(body) if body is not None else None

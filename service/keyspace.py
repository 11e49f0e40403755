"""Redis key names, laid out so that every multi-key operation stays in one hash slot.

Redis Cluster runs a script or transaction only if all its keys hash to one slot; a `{tag}`
in a key name makes only the tag count. Parcours keys carry one of three kinds of tag:

- `{j<n>}`, n = `journey_shard(customer_id, shards)`: a customer's journey and label book,
  and the label deadline indexes they are written with, spread over `shards` tags so that a
  cluster spreads journeys over its nodes. A consumer batch is written with one script call
  per tag it touches (one call in all on standalone Redis, which has no slots);
- `{catalog}`: everything the recommendation catalog learns (written by one script per batch);
- `{webhooks}`: subscriptions, parked deliveries and the delivery log;
- `{analytics}`: the journey analytics (one fenced script per batch, like the catalog);
- `{experiments}`: experiment definitions.

Single-key values (the model snapshot hash, the watermarks hash) need no tag. The layout is
the same with and without a cluster, so moving to one is a key-by-key copy, not a migration.
The shard count is fixed for the life of the data: changing it moves every journey's key.
"""

from __future__ import annotations

import zlib
from typing import Final

CATALOG_TAG: Final = "{catalog}"
WEBHOOKS_TAG: Final = "{webhooks}"
ANALYTICS_TAG: Final = "{analytics}"
EXPERIMENTS_TAG: Final = "{experiments}"


def journey_shard(customer_id: str, shards: int) -> int:
    """Which of `shards` journey tags holds this customer: stable across processes and runs."""
    return zlib.crc32(customer_id.encode()) % shards


def journey_tag(shard: int) -> str:
    return f"{{j{shard}}}"

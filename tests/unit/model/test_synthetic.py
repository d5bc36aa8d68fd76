"""The synthetic stream: time order, long tail, churned items, orders from clicked items."""

from __future__ import annotations

import itertools
from collections import Counter

from model.synthetic import SyntheticConfig, SyntheticStream, synthetic_interactions


def test_the_stream_has_the_shape_of_e_commerce_traffic() -> None:
    config = SyntheticConfig(users=300, items=800, seed=3)
    rows = list(synthetic_interactions(config, 20_000))
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(rows))
    kinds = Counter(r.kind for r in rows)
    assert 0.03 < kinds["order"] / len(rows) < 0.3
    popularity = sorted(Counter(r.item_id for r in rows if r.kind == "click").values())
    top_share = sum(popularity[-len(popularity) // 10 :]) / sum(popularity)
    assert top_share > 0.4
    half = len(rows) // 2
    early = {r.item_id for r in rows[: half // 4]}
    late = {r.item_id for r in rows[-half // 4 :]}
    assert late - early, "new items appear"
    assert early - late, "old items fade"


def test_orders_buy_items_clicked_in_the_same_session() -> None:
    stream = SyntheticStream(SyntheticConfig(users=50, items=200, seed=1))
    clicked: dict[str, set[str]] = {}
    for event in stream.events(3_000):
        for row in event:
            if row.kind == "click":
                clicked.setdefault(row.user_id, set()).add(row.item_id)
            else:
                assert row.item_id in clicked[row.user_id]
                assert len({r.ts_ms for r in event}) == 1


def test_the_same_seed_gives_the_same_stream() -> None:
    config = SyntheticConfig(users=40, items=100, seed=9)
    assert list(synthetic_interactions(config, 500)) == list(synthetic_interactions(config, 500))

"""The shared ranking state: it survives a checkpoint exactly, and item attributes stay
consistent as items are described, re-described and removed."""

from __future__ import annotations

import io
import random

import torch

from model.interaction import Interaction
from model.ranked import RankedRecommender
from model.ranking import ItemAttributes, Ranking
from model.recommender import RecommendRequest
from model.trainer import TrainingExample

HOUR_MS = 3_600_000


def _learned(seed: int) -> RankedRecommender:
    rng = random.Random(seed)
    system = RankedRecommender(None)
    system.set_items({f"i{n}": {"category": f"c{n % 4}", "brand": f"b{n % 3}"} for n in range(40)})
    histories: dict[str, list[Interaction]] = {}
    for start in range(0, 1500, 50):
        batch = []
        for t in range(start, start + 50):
            user = f"u{rng.randrange(30)}"
            event = Interaction(user, f"i{rng.randrange(40)}", "click", t * HOUR_MS)
            past = histories.setdefault(user, [])
            batch.append(TrainingExample(tuple(past), event))
            past.append(event)
        system.learn_many(batch)
    return system


def test_a_ranking_restored_from_a_safe_checkpoint_ranks_exactly_alike() -> None:
    system = _learned(seed=1)
    buffer = io.BytesIO()
    torch.save(system.ranking.state_dict(), buffer)
    buffer.seek(0)
    restored = Ranking.from_state_dict(torch.load(buffer, weights_only=True))
    assert restored.covisit.neighbour_rows() == system.ranking.covisit.neighbour_rows()
    for user in range(10):
        history = tuple(Interaction(f"u{user}", f"i{n}", "click", n) for n in range(user, user + 5))
        request = RecommendRequest(f"u{user}", history, 2000 * HOUR_MS)
        assert restored.rank(request, None, 10) == system.ranking.rank(request, None, 10)


def test_item_attributes_follow_changes_and_list_a_categorys_newest_first() -> None:
    items = ItemAttributes()
    for n in range(5):
        items.set(f"i{n}", "tents", "acme")
    items.set("i1", "tents", None)  # same category: keeps its place, loses its brand
    items.set("i2", "boots", "acme")
    items.remove("i3")
    assert items.newest_in("tents", 10) == ["i4", "i1", "i0"]
    assert items.newest_in("boots", 10) == ["i2"]
    assert "i1" not in items.brand_of
    assert items.brand_of["i2"] == "acme"
    restored = ItemAttributes()
    restored.load_state_dict(items.state_dict())
    assert restored.newest_in("tents", 10) == ["i4", "i1", "i0"]
    assert restored.category_of == items.category_of
    assert restored.brand_of == items.brand_of

"""TwoTowerRecommender: shapes, unit norms, causality, growth and hashed features."""

from __future__ import annotations

import pytest
import torch

from model.interaction import Interaction
from model.two_tower import OverlaidEmbedding, TwoTowerConfig, TwoTowerRecommender


def _model(**overrides: object) -> TwoTowerRecommender:
    model = TwoTowerRecommender(TwoTowerConfig(dim=16, max_history=6, **overrides), seed=0)  # type: ignore[arg-type]
    admission = model.vocabulary.observe([f"i{n}" for n in range(10)], ts_ms=0)
    model.resize(admission.capacity)
    return model.eval()


def _clicks(*items: str) -> list[Interaction]:
    return [Interaction("u", item, "click", ts) for ts, item in enumerate(items)]


def test_towers_output_unit_vectors_of_the_configured_width() -> None:
    for encoder in ("transformer", "gru"):
        model = _model(encoder=encoder)
        users = model.embed_users(
            [_clicks("i1", "i2"), [], _clicks(*[f"i{n}" for n in range(9)])], 10
        )
        items = model.embed_items(["i1", "i5", "never-seen"])
        assert users.shape == (3, 16)
        assert items.shape == (3, 16)
        assert users.dtype == items.dtype == torch.float32
        assert torch.allclose(users.norm(dim=1), torch.ones(3), atol=1e-5)
        assert torch.allclose(items.norm(dim=1), torch.ones(3), atol=1e-5)


def test_a_position_never_sees_later_interactions() -> None:
    model = _model()
    one = model.encode_histories([_clicks("i1", "i2", "i3")], now_ms=10)
    other = model.encode_histories([_clicks("i1", "i2", "i9")], now_ms=10)
    with torch.no_grad():
        first, second = model.sequence_states(one), model.sequence_states(other)
    assert torch.allclose(first[:, :-1], second[:, :-1], atol=1e-6)
    assert not torch.allclose(first[:, -1], second[:, -1])


def test_only_the_most_recent_max_history_interactions_count() -> None:
    model = _model()
    recent = _clicks("i1", "i2", "i3", "i4", "i5", "i6")
    longer = [Interaction("u", "i9", "order", -5), *recent]
    assert torch.allclose(model.embed_users([recent], 10), model.embed_users([longer], 10))


def test_resize_keeps_learned_rows_and_adds_new_ones() -> None:
    model = _model()
    before = model.item_embedding.weight.detach().clone()
    model.resize(before.shape[0] + 100)
    after = model.item_embedding.weight
    assert after.shape[0] == before.shape[0] + 100
    assert torch.equal(after[: before.shape[0]], before)


def test_unknown_items_with_features_get_distinct_vectors() -> None:
    model = _model(feature_fields=("category", "brand"))
    model.set_item_features("new-a", {"category": "shoes", "brand": "x"})
    model.set_item_features("new-b", {"category": "books", "brand": "y"})
    with torch.no_grad():
        model.feature_embedding.weight.normal_()
    a, b, plain = model.embed_items(["new-a", "new-b", "new-c"])
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, plain)


def test_a_model_with_item_features_embeds_no_items_and_unadmitted_ones() -> None:
    model = TwoTowerRecommender(
        TwoTowerConfig(dim=8, heads=2, max_history=4, feature_fields=("category",)), seed=0
    )
    assert model.embed_items([]).shape == (0, 8)
    model.set_item_features("new", {"category": "shoes"})
    model.set_item_features("other", {"category": "shoes"})
    vectors = model.embed_items(["new", "other"])  # neither admitted: row 0 plus the category
    assert torch.allclose(vectors[0], vectors[1])


def test_serving_embeds_the_same_user_vectors_as_every_position_s_states() -> None:
    for layers in (1, 2):
        model = _model(layers=layers)
        with torch.no_grad():  # weights far from their start, so a wrong mask would show
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.3)
        histories = [[], _clicks("i1"), _clicks("i1", "i2", "i3"), _clicks(*["i4", "i5"] * 5)]
        histories[-1] = [*histories[-1][:-1], Interaction("u", "i6", "order", 99)]
        batch = model.encode_histories(histories, now_ms=[10, 10, 5_000, 100_000])
        with torch.no_grad():
            every = torch.nn.functional.normalize(model.sequence_states(batch)[:, -1], dim=-1)
        assert torch.allclose(
            model.embed_users(histories, [10, 10, 5_000, 100_000]), every, atol=1e-5
        )


def test_histories_are_right_aligned_with_kinds_ages_and_a_mask() -> None:
    model = _model()
    order = Interaction("u", "i2", "order", 2_000)
    batch = model.encode_histories([_clicks("i1"), [], [*_clicks("i1"), order]], [1_000, 0, 6_000])
    rows = model.vocabulary.lookup(["i1", "i2"]).tolist()
    assert batch.rows.tolist() == [[0] * 5 + rows[:1], [0] * 6, [0] * 4 + rows]
    assert batch.kinds.tolist() == [[0] * 5 + [1], [0] * 6, [0] * 4 + [1, 2]]
    assert batch.mask.tolist() == [[False] * 5 + [True], [False] * 6, [False] * 4 + [True] * 2]
    # ages in log2 seconds from each history's own now: 1 s -> 1, 6 s -> 2, 4 s -> 2
    assert batch.ages.tolist() == [[0] * 5 + [1], [0] * 6, [0] * 4 + [2, 2]]


def test_the_catalogue_follows_admissions_expiries_features_and_training() -> None:
    model = TwoTowerRecommender(
        TwoTowerConfig(dim=8, heads=2, max_history=4, feature_fields=("category",)), seed=0
    )
    model.vocabulary.configure(admit_after=1, expire_after_ms=1_000)
    model.vocabulary.observe(["a", "b"], ts_ms=0)

    def expected(ids: list[str]) -> torch.Tensor:
        rows = torch.from_numpy(model.vocabulary.lookup(ids))
        return model.item_vectors(rows, model.feature_ids(ids))

    ids, vectors = model.catalogue()
    assert ids == ["a", "b"]
    assert torch.equal(vectors, expected(ids))
    assert model.catalogue()[0] is ids  # unchanged: the same ids
    model.vocabulary.observe(["c"], ts_ms=5_000)
    model.resize(model.vocabulary.capacity)
    assert model.catalogue()[0] == ["a", "b", "c"]
    model.vocabulary.expire(now_ms=5_500)
    assert model.catalogue()[0] == ["c"]
    with torch.no_grad():
        model.feature_embedding.weight.normal_()
        model.item_embedding.weight.mul_(3)  # what a training step does to the rows
    model.set_item_features("c", {"category": "shoes"})
    ids, vectors = model.catalogue()
    assert torch.equal(vectors, expected(["c"]))


def test_an_overlaid_table_looks_up_changed_rows_over_a_base_it_never_writes() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    kept = base.clone()
    table = OverlaidEmbedding(
        base, torch.tensor([1, 4]), torch.tensor([[-1.0, -1.0], [-4.0, -4.0]])
    )
    found = table(torch.tensor([[0, 1], [4, 5]]))
    assert found.tolist() == [[[0.0, 1.0], [-1.0, -1.0]], [[-4.0, -4.0], [10.0, 11.0]]]
    found += 100  # what a caller does with its lookup stays its own
    assert torch.equal(base, kept)
    assert table(torch.tensor([0])).tolist() == [[0.0, 1.0]]


def test_the_catalogue_is_made_in_chunks_into_a_table_the_caller_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made a few rows at a time and into the caller's table (at 1M items a new 256 MB one
    each call cost its page faults), the catalogue is the same to the bit."""
    monkeypatch.setattr("model.two_tower.CATALOGUE_CHUNK", 3)
    model = _model(feature_fields=("category",))
    with torch.no_grad():
        model.feature_embedding.weight.normal_()
    for n in (1, 4, 8):
        model.set_item_features(f"i{n}", {"category": f"c{n % 2}"})
    ids, made = model.catalogue()
    rows = torch.from_numpy(model.vocabulary.lookup(ids))
    assert torch.equal(made, model.item_vectors(rows, model.feature_ids(ids)))
    table = torch.full((len(ids) + 5, 16), float("nan"))
    again, into = model.catalogue(out=table)
    assert again is ids
    assert into.data_ptr() == table.data_ptr()  # its first rows, written
    assert torch.equal(into, made)
    assert table[len(ids) :].isnan().all()  # the rest untouched
    for unfit in (torch.zeros(len(ids) - 1, 16), torch.zeros(len(ids), 16, dtype=torch.float64)):
        _, elsewhere = model.catalogue(out=unfit)
        assert elsewhere.data_ptr() != unfit.data_ptr()
        assert torch.equal(elsewhere, made)
        assert not unfit.any()

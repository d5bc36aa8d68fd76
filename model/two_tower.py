"""The two-tower recommender: item ids (+ hashed features) and a causal encoder over histories."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from model.errors import ModelError
from model.interaction import INTERACTION_KINDS, Interacted, kind_code, kind_of
from model.vocabulary import IdVocabulary

PAD_KIND = 0  # a history slot's kind embedding: 0 is padding, else 1 + the kind's code
_KIND_TOKENS = {kind: 1 + kind_code(kind) for kind in INTERACTION_KINDS}  # see PAD_KIND
ITEM_FEATURE_FIELDS = ("brand", "category")  # item metadata the tower can hash
CATALOGUE_CHUNK = 1 << 15  # items per step of `catalogue`: its temporaries stay a few MB


class ModelConfigError(ModelError, ValueError):
    """A model configuration that cannot be built."""


@dataclass(frozen=True, slots=True)
class TwoTowerConfig:
    """Architecture knobs; saved with every checkpoint."""

    dim: int = 64
    max_history: int = 20
    encoder: Literal["transformer", "gru"] = "transformer"
    layers: int = 1
    heads: int = 2
    dropout: float = 0.0
    age_buckets: int = 32
    history_decays: tuple[float, ...] = (0.9,)
    feature_fields: tuple[str, ...] = ()
    feature_buckets: int = 1 << 14

    def __post_init__(self) -> None:
        if self.dim < 2 or self.dim % self.heads:
            raise ModelConfigError(f"dim {self.dim} must be >= 2 and divisible by heads")
        if self.max_history < 1 or self.layers < 1:
            raise ModelConfigError("max_history and layers must be >= 1")
        if self.encoder not in ("transformer", "gru"):
            raise ModelConfigError(f"unknown encoder {self.encoder!r}")
        if not 0 <= self.dropout < 1:
            raise ModelConfigError("dropout must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        out = asdict(self)
        out["feature_fields"] = list(self.feature_fields)
        out["history_decays"] = list(self.history_decays)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TwoTowerConfig:
        """Inverse of `to_dict`."""
        tuples = {k: tuple(values[k]) for k in ("feature_fields", "history_decays") if k in values}
        return cls(**{**values, **tuples})


@dataclass(frozen=True, slots=True)
class HistoryBatch:
    """Right-aligned histories (most recent last), `mask` True where a position is real."""

    rows: Tensor
    kinds: Tensor
    ages: Tensor
    mask: Tensor

    def to(self, device: torch.device) -> HistoryBatch:
        return HistoryBatch(*(t.to(device) for t in (self.rows, self.kinds, self.ages, self.mask)))


def age_bucket(age_ms: Tensor, buckets: int) -> Tensor:
    """Log2 buckets of age in seconds: 0 for under a second, capped at `buckets - 1`."""
    seconds = age_ms.clamp(min=0).to(torch.float64) / 1000.0
    return torch.log2(1.0 + seconds).floor().clamp(max=buckets - 1).to(torch.long)


def newest_ms(history: Sequence[Interacted], default: int) -> int:
    """The time user towers measure history ages from: the user's newest interaction.

    Not the request time: a user vector made at ingest, before any request, must be the
    one training saw, and the live service and offline evaluation must agree.
    """
    return history[-1].ts_ms if history else default


def hash_feature(field: str, value: str, buckets: int) -> int:
    """A stable bucket in [1, buckets] for one categorical value (0 means 'no feature')."""
    return zlib.crc32(f"{field}={value}".encode()) % buckets + 1


@dataclass(frozen=True, slots=True)
class _OwnedRows:
    """The admitted items' rows, ids and features as of a vocabulary and feature state: the
    catalogue's vectors change with every step, its ids only on admissions and expiries."""

    vocabulary: IdVocabulary
    key: tuple[int, int, torch.device]
    rows: Tensor
    ids: list[str]
    features: Tensor | None


def _holds(table: Tensor, rows: int, dim: int, device: torch.device) -> bool:
    """Whether `table` can take `rows` float32 vectors of `dim` on `device`."""
    return (
        table.dtype == torch.float32
        and table.device == device
        and table.dim() == 2
        and table.shape[0] >= rows
        and table.shape[1] == dim
    )


def _last_position(layer: nn.TransformerEncoderLayer, tokens: Tensor, real: Tensor) -> Tensor:
    """A pre-norm encoder layer's output [B, dim] at the last position, in eval mode: that
    position attends to every real one and to itself, as under the causal mask."""
    batch, length, dim = tokens.shape
    attention = layer.self_attn
    heads = attention.num_heads
    normed = layer.norm1(tokens)
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    query = functional.linear(normed[:, -1], weight[:dim], bias[:dim])
    keys, values = functional.linear(normed, weight[dim:], bias[dim:]).chunk(2, dim=-1)
    split = (batch, length, heads, dim // heads)
    scores = torch.einsum(
        "bhd,blhd->bhl", query.view(batch, heads, dim // heads), keys.reshape(split)
    ) / math.sqrt(dim // heads)
    hidden = ~real
    hidden[:, -1] = False
    scores = scores.masked_fill(hidden.unsqueeze(1), -math.inf).softmax(dim=-1)
    mixed = torch.einsum("bhl,blhd->bhd", scores, values.reshape(split)).reshape(batch, dim)
    state: Tensor = tokens[:, -1] + attention.out_proj(mixed)
    fed: Tensor = layer.linear2(layer.activation(layer.linear1(layer.norm2(state))))
    return state + fed


class OverlaidEmbedding(nn.Embedding):
    """A served version's item table: a shared base table (mapped from its file, the same
    pages for every process and version that uses it) and the rows changed since, looked up
    over it. Written into the base instead, those rows would copy every page they touch:
    at 1M items the whole 256 MB table once ~60k rows had moved."""

    def __init__(self, base: Tensor, rows: Tensor, values: Tensor) -> None:
        count, dim = base.shape
        super().__init__(count, dim, _weight=base, _freeze=True)
        slots = torch.full((len(base),), -1, dtype=torch.int32)
        slots[rows] = torch.arange(len(rows), dtype=torch.int32)
        self.slots: Tensor = slots  # row -> its place in `values`, -1 for a base row
        self.values: Tensor = values

    def forward(self, rows: Tensor) -> Tensor:
        """The rows' vectors: the changed ones' from `values`, the others' from the base."""
        found = super().forward(rows)
        slot = self.slots[rows]
        changed = slot >= 0
        if bool(changed.any()):  # `found` is a gathered copy: the base is never written
            found[changed] = self.values[slot[changed].long()]
        return found


class TwoTowerRecommender(nn.Module):
    """Scores `user · item` between L2-normalised towers, so inner-product search ranks alike.

    >>> model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    >>> _ = model.vocabulary.observe(["i1", "i2"], ts_ms=0)
    >>> model.resize(model.vocabulary.capacity)
    >>> items = model.embed_items(["i1", "i2", "new"])
    >>> items.shape, items.dtype
    (torch.Size([3, 8]), torch.float32)
    >>> from model.interaction import Interaction
    >>> users = model.embed_users([[Interaction("u", "i1", "click", 0)], []], now_ms=1_000)
    >>> users.shape, bool(torch.allclose(users.norm(dim=1), torch.ones(2)))
    (torch.Size([2, 8]), True)
    """

    pool_weights: Tensor

    def __init__(
        self,
        config: TwoTowerConfig,
        vocabulary: IdVocabulary | None = None,
        *,
        seed: int = 0,
        draw_tables: bool = True,
    ) -> None:
        """Every random draw (initial weights, rows of new items) follows from `seed`; the
        process-wide torch generator is neither read nor advanced. `draw_tables=False` leaves
        the item and feature tables undrawn, for a model whose saved state is loaded next."""
        super().__init__()
        self.config = config
        self.vocabulary = vocabulary if vocabulary is not None else IdVocabulary()
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build_layers(config, draw_tables)
        self._item_features: dict[str, list[int]] = {}
        self._features_changed = 0
        self._owned: _OwnedRows | None = None
        if draw_tables:
            self.reset_rows(torch.arange(self.vocabulary.capacity))

    def _build_layers(self, config: TwoTowerConfig, draw_tables: bool) -> None:
        dim = config.dim
        capacity, buckets = self.vocabulary.capacity, config.feature_buckets + 1
        if not config.feature_fields:
            buckets = 1
        # drawing a 16k-bucket feature table only to overwrite it took a third of a load
        undrawn = None if draw_tables else torch.empty(buckets, dim)
        self.item_embedding = nn.Embedding(capacity, dim, sparse=True)
        self.feature_embedding = nn.Embedding(
            buckets, dim, padding_idx=0, sparse=True, _weight=undrawn
        )
        self.kind_embedding = nn.Embedding(3, dim)
        self.age_embedding = nn.Embedding(config.age_buckets, dim)
        self.position_embedding = nn.Embedding(config.max_history, dim)
        self.input_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder: nn.Module
        if config.encoder == "transformer":
            layer = nn.TransformerEncoderLayer(
                dim,
                config.heads,
                dim_feedforward=2 * dim,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        else:
            self.encoder = nn.GRU(dim, dim, num_layers=config.layers, batch_first=True)
        self.output_norm = nn.LayerNorm(dim)
        self.user_projection = nn.Linear(dim, dim)
        decays = torch.tensor(config.history_decays, dtype=torch.float32).view(-1, 1, 1)
        self.pool_scale = nn.Parameter(torch.ones(len(config.history_decays)))
        steps = torch.arange(config.max_history, dtype=torch.float32)
        gaps = steps.unsqueeze(1) - steps.unsqueeze(0)
        self.register_buffer(
            "pool_weights",
            torch.where(gaps >= 0, decays**gaps, torch.zeros(())),
            persistent=False,
        )

    @property
    def device(self) -> torch.device:
        return self.item_embedding.weight.device

    def resize(self, capacity: int) -> None:
        """Grow the item table to `capacity` rows, keeping learned rows."""
        old = self.item_embedding.weight
        if capacity <= old.shape[0]:
            return
        grown = torch.empty(capacity, old.shape[1], device=old.device, dtype=old.dtype)
        grown[: old.shape[0]] = old.detach()
        self.item_embedding.weight = nn.Parameter(grown)
        self.reset_rows(torch.arange(old.shape[0], capacity))

    def reset_rows(self, rows: Tensor | Sequence[int]) -> None:
        """Re-initialise item rows (new or recycled ids) to small random vectors."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        with torch.no_grad():
            rows_init = torch.randn(len(index), self.config.dim, generator=self.generator)
            self.item_embedding.weight[index] = rows_init.to(self.device) * (
                1.0 / math.sqrt(self.config.dim)
            )

    def set_item_features(self, item_id: str, features: Mapping[str, str]) -> None:
        """Attach categorical features (e.g. category, brand) named in `feature_fields`."""
        fields = self.config.feature_fields
        buckets = self.config.feature_buckets
        self._features_changed += 1
        self._item_features[item_id] = [
            hash_feature(f, features[f], buckets) if features.get(f) else 0 for f in fields
        ]

    def feature_ids(self, item_ids: Sequence[str]) -> Tensor | None:
        """Hashed feature buckets [N, F] for `item_ids`, or None when the model has none."""
        if not self.config.feature_fields:
            return None
        width = len(self.config.feature_fields)
        blank = [0] * width
        table = [self._item_features.get(i, blank) for i in item_ids]
        # [N, F] even for no ids: a flat empty tensor would not broadcast against [0, dim]
        return torch.tensor(table, dtype=torch.long, device=self.device).reshape(-1, width)

    def item_features_state(self) -> dict[str, list[int]]:
        """The attached features as plain lists (checkpoint-safe)."""
        return dict(self._item_features)

    def load_item_features_state(self, state: Mapping[str, list[int]]) -> None:
        self._item_features = {k: list(v) for k, v in state.items()}
        self._features_changed += 1

    def item_vectors(
        self, rows: Tensor, feature_ids: Tensor | None = None, out: Tensor | None = None
    ) -> Tensor:
        """L2-normalised item vectors [N, dim] from rows [N] and optional features [N, F]
        (into `out`, float32 [N, dim], when given)."""
        vectors = self.item_embedding(rows)
        if feature_ids is not None:
            vectors = vectors + self.feature_embedding(feature_ids).sum(dim=1)
        return functional.normalize(vectors.float(), dim=-1, out=out)

    def _inputs(self, history: HistoryBatch) -> tuple[Tensor, Tensor]:
        """The encoder's input tokens [B, L, dim] and the masked item rows they start from."""
        _, length = history.rows.shape
        positions = torch.arange(length, device=history.rows.device)
        items = self.item_embedding(history.rows) * history.mask.unsqueeze(-1)
        tokens = (
            items
            + self.kind_embedding(history.kinds)
            + self.age_embedding(history.ages)
            + self.position_embedding(positions).unsqueeze(0)
        )
        return self.dropout(self.input_norm(tokens)), items

    def _pool_weights(self) -> Tensor:
        """[L, L]: how much position i's state adds of item j's vector (decayed, j <= i)."""
        return torch.einsum("p,pij->ij", self.pool_scale, self.pool_weights)

    def sequence_states(self, history: HistoryBatch) -> Tensor:
        """Per-position user states [B, L, dim] (unnormalised); position i sees only <= i."""
        tokens, items = self._inputs(history)
        if isinstance(self.encoder, nn.GRU):
            states, _ = self.encoder(tokens)
        else:
            states = self.encoder(tokens, mask=self._attention_mask(history.mask))
        recent = functional.normalize(items.float(), dim=-1)
        pooled = torch.einsum("ij,bjd->bid", self._pool_weights(), recent)
        projected: Tensor = self.user_projection(self.output_norm(states))
        return projected + pooled

    def user_vectors(self, history: HistoryBatch) -> Tensor:
        """L2-normalised user vectors [B, dim]: the state at the most recent position."""
        if self.training or isinstance(self.encoder, nn.GRU):
            last = self.sequence_states(history)[:, -1]
        else:
            last = self._last_state(history)
        return functional.normalize(last.float(), dim=-1)

    def _last_state(self, history: HistoryBatch) -> Tensor:
        """`sequence_states(history)[:, -1]` in eval mode, with the last encoder layer run for
        the last position only (its query, feed-forward and projection): what serving needs,
        at about a third of the work of every position's state."""
        tokens, items = self._inputs(history)
        layers = list(self.encoder.layers)  # type: ignore[arg-type]
        if len(layers) > 1:
            mask = self._attention_mask(history.mask)
            for layer in layers[:-1]:
                tokens = layer(tokens, src_mask=mask)
        state = _last_position(layers[-1], tokens, history.mask)
        recent = functional.normalize(items.float(), dim=-1)
        pooled = torch.einsum("j,bjd->bd", self._pool_weights()[-1], recent)
        projected: Tensor = self.user_projection(self.output_norm(state))
        return projected + pooled

    def _attention_mask(self, real: Tensor) -> Tensor:
        """Causal mask that also hides padding; a position always sees itself (no empty rows)."""
        _batch, length = real.shape
        causal = torch.ones(length, length, dtype=torch.bool, device=real.device).triu(1)
        hidden = causal.unsqueeze(0) | ~real.unsqueeze(1)
        hidden = hidden & ~torch.eye(length, dtype=torch.bool, device=real.device).unsqueeze(0)
        blocked = torch.zeros(hidden.shape, device=real.device).masked_fill(hidden, -math.inf)
        return blocked.repeat_interleave(self.config.heads, dim=0)

    def encode_histories(
        self, histories: Sequence[Sequence[Interacted]], now_ms: int | Sequence[int]
    ) -> HistoryBatch:
        """Tensors for the last `max_history` interactions of each history (known ids only)."""
        length = self.config.max_history
        batch = len(histories)
        nows = np.full(batch, now_ms) if isinstance(now_ms, int) else np.array(now_ms, np.int64)
        recents = [history[-length:] for history in histories]
        sizes = np.fromiter((len(r) for r in recents), dtype=np.int64, count=batch)
        flat = [interaction for recent in recents for interaction in recent]
        # one array per field for the whole batch, scattered into right-aligned rows
        owner = np.repeat(np.arange(batch), sizes)
        column = np.arange(len(flat)) - np.repeat(np.cumsum(sizes) - length, sizes)
        stamps = np.fromiter((i.ts_ms for i in flat), dtype=np.int64, count=len(flat))
        rows = np.zeros((batch, length), dtype=np.int64)
        kinds = np.zeros((batch, length), dtype=np.int64)
        ages = torch.zeros(batch, length, dtype=torch.long)
        mask = np.zeros((batch, length), dtype=np.bool_)
        rows[owner, column] = self.vocabulary.lookup(i.item_id for i in flat)
        kinds[owner, column] = np.fromiter(
            (_KIND_TOKENS[kind_of(i.kind)] for i in flat), dtype=np.int64, count=len(flat)
        )
        ages[owner, column] = age_bucket(
            torch.from_numpy(nows[owner] - stamps), self.config.age_buckets
        )
        mask[owner, column] = True
        tensors = (torch.from_numpy(rows), torch.from_numpy(kinds), ages, torch.from_numpy(mask))
        return HistoryBatch(*tensors).to(self.device)

    @torch.no_grad()
    def embed_users(
        self, histories: Sequence[Sequence[Interacted]], now_ms: int | Sequence[int]
    ) -> Tensor:
        """float32 [B, dim] unit vectors for users given their histories, as of `now_ms`."""
        if not self.training:  # a served model: switching modes walks every module (~0.3 ms)
            return self.user_vectors(self.encode_histories(histories, now_ms))
        self.eval()
        try:
            return self.user_vectors(self.encode_histories(histories, now_ms))
        finally:
            self.train()

    @torch.no_grad()
    def embed_items(self, item_ids: Sequence[str]) -> Tensor:
        """float32 [N, dim] unit vectors; ids without a row share row 0 plus their features."""
        rows = torch.from_numpy(self.vocabulary.lookup(item_ids)).to(self.device)
        return self.item_vectors(rows, self.feature_ids(item_ids))

    @torch.no_grad()
    def catalogue(self, out: Tensor | None = None) -> tuple[list[str], Tensor]:
        """Every admitted item id and its vector [N, dim], in row order. The ids list is the
        same object until an admission, expiry or feature change (read it, never change it).

        Made `CATALOGUE_CHUNK` rows at a time, into the first N rows of `out` when it is a
        float32 table of the model's device with room for them (else a new one): a caller
        that calls often keeps its tables, as at 1M items every new 256 MB one is paid in
        page faults (made whole and new, a catalogue took 1.2-4.3 s there; ~0.2 s now)."""
        owned = self._owned
        vocabulary = self.vocabulary
        key = (vocabulary.changes, self._features_changed, self.device)
        if owned is None or owned.vocabulary is not vocabulary or owned.key != key:
            rows = vocabulary.active_rows()
            ids = vocabulary.ids(rows)
            tensor = torch.from_numpy(rows).to(self.device)
            owned = self._owned = _OwnedRows(vocabulary, key, tensor, ids, self.feature_ids(ids))
        count, dim = len(owned.ids), self.config.dim
        if out is None or not _holds(out, count, dim, self.device):
            out = torch.empty(count, dim, device=self.device)
        vectors = out[:count]
        for start in range(0, count, CATALOGUE_CHUNK):
            part = slice(start, start + CATALOGUE_CHUNK)
            features = None if owned.features is None else owned.features[part]
            self.item_vectors(owned.rows[part], features, out=vectors[part])
        return owned.ids, vectors

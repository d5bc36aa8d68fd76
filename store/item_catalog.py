"""A replica's item metadata, kept beside the category and brand tables the ranker reads."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from model.ranking import ItemAttributes
from store.vector_state import ItemMeta


class ItemCatalog(MutableMapping[str, ItemMeta]):
    """item id -> `ItemMeta`; every change also updates `attributes` (category, brand and
    each category's newest items), so the cold-start source never scans the catalogue.
    `deleted` holds the items deleted since (never served; new metadata brings one back)."""

    def __init__(self) -> None:
        self._meta: dict[str, ItemMeta] = {}
        self.attributes = ItemAttributes()
        self.deleted: set[str] = set()

    def delete(self, item_id: str) -> None:
        """Forget `item_id`'s metadata and never serve it (until it is described again)."""
        self.pop(item_id, None)
        self.deleted.add(item_id)

    def __getitem__(self, item_id: str) -> ItemMeta:
        return self._meta[item_id]

    def __setitem__(self, item_id: str, meta: ItemMeta) -> None:
        self._meta[item_id] = meta
        self.attributes.set(item_id, meta.category, meta.brand)
        self.deleted.discard(item_id)

    def __delitem__(self, item_id: str) -> None:
        del self._meta[item_id]
        self.attributes.remove(item_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)

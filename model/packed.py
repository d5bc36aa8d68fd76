"""Per-item columns of a saved state as tensors instead of Python lists.

A checkpoint is read with `torch.load(weights_only=True)`, whose unpickler is pure Python:
a list costs a few microseconds per element, a tensor one read. Every serving process loads
each model version (one a second), so item ids kept as lists made that load grow with the
catalogue (~60 ms per 20,000 ids). States saved as lists before still load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def pack_strings(values: Sequence[str]) -> dict[str, torch.Tensor]:
    """`values` as their UTF-8 bytes end to end and where each one ends."""
    encoded = [v.encode("utf-8") for v in values]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
    return {"utf8": torch.from_numpy(data), "ends": torch.from_numpy(ends)}


def unpack_strings(packed: Any) -> list[str]:
    """What `pack_strings` packed (or a list of strings, as older states hold)."""
    if isinstance(packed, list | tuple):
        return [str(v) for v in packed]
    raw = packed["utf8"].numpy().tobytes()
    ends: list[int] = packed["ends"].tolist()
    return [raw[start:end].decode("utf-8") for start, end in zip([0, *ends], ends, strict=False)]


def pack_ints(values: Sequence[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def unpack_ints(packed: Any) -> list[int]:
    """What `pack_ints` packed (or a list, as older states hold)."""
    return _values(packed, int)


def pack_bools(values: Sequence[bool]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def unpack_bools(packed: Any) -> list[bool]:
    """What `pack_bools` packed (or a list, as older states hold)."""
    return _values(packed, bool)


def _values(packed: Any, kind: Callable[[Any], T]) -> list[T]:
    values = packed.tolist() if isinstance(packed, torch.Tensor) else packed
    return [kind(v) for v in values]

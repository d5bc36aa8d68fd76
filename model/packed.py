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
    """`values` as UTF-8 bytes: joined by NUL where none holds one (one split unpacks them),
    else end to end with where each one ends."""
    joined = "\x00".join(values)
    if joined.count("\x00") == max(len(values) - 1, 0):  # no value holds a NUL
        data = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8).copy()
        return {"nul_joined": torch.from_numpy(data), "count": torch.tensor(len(values))}
    encoded = [v.encode("utf-8") for v in values]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
    return {"utf8": torch.from_numpy(data), "ends": torch.from_numpy(ends)}


def unpack_strings(packed: Any) -> list[str]:
    """What `pack_strings` packed (or a list of strings, as older states hold)."""
    if isinstance(packed, list | tuple):
        return [str(v) for v in packed]
    if "nul_joined" in packed:
        if int(packed["count"]) == 0:
            return []
        return str(packed["nul_joined"].numpy().tobytes().decode("utf-8")).split("\x00")
    raw = packed["utf8"].numpy().tobytes()
    ends: list[int] = packed["ends"].tolist()
    return [raw[start:end].decode("utf-8") for start, end in zip([0, *ends], ends, strict=False)]


def pack_ints(values: Sequence[int]) -> torch.Tensor:
    """Through numpy: `torch.tensor` of a list is ~4x slower (75 ms at 1M ints)."""
    return torch.from_numpy(np.fromiter(values, dtype=np.int64, count=len(values)))


def unpack_ints(packed: Any) -> list[int]:
    """What `pack_ints` packed (or a list, as older states hold)."""
    return _values(packed, int)


def pack_bools(values: Sequence[bool]) -> torch.Tensor:
    return torch.from_numpy(np.fromiter(values, dtype=np.bool_, count=len(values)))


def unpack_bools(packed: Any) -> list[bool]:
    """What `pack_bools` packed (or a list, as older states hold)."""
    return _values(packed, bool)


def _values(packed: Any, kind: Callable[[Any], T]) -> list[T]:
    if isinstance(packed, torch.Tensor):  # already Python ints / bools: no second pass
        return packed.tolist()
    return [kind(v) for v in packed]

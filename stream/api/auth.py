"""API keys: scoped, stored as SHA-256 digests, compared in constant time, rate-limited per key.

Keys are configured by `RECSTREAM_API_KEYS` (a JSON entry or list of entries) and/or a keys
file holding the same (`RECSTREAM_API_KEYS_FILE`, default `<data dir>/api-keys.json` when it
exists): `[{"name": "shop-web", "sha256": "<hex>", "scopes": ["read"], "rate_per_s": 500,
"burst": 1000}]`. `recstream keys new` makes a key and adds its entry to the file. Keys are
random 256-bit tokens, so one SHA-256 is as strong as a slow hash and costs microseconds.
With no key configured the API is open (for local use) and says so at start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

Scope = Literal["read", "ingest", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "ingest", "admin")


class KeyEntry(BaseModel):
    """One configured key: who it is, what it may do, how fast."""

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    scopes: frozenset[Scope]
    rate_per_s: float | None = Field(None, gt=0, description="default: the API's setting")
    burst: int | None = Field(None, ge=1, description="default: the API's setting")


class TokenBucket:
    """`rate` requests/s on average, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """0.0 when a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyRing:
    """The configured keys and their buckets; empty means the API is open."""

    def __init__(self, entries: list[KeyEntry], rate_per_s: float, burst: int) -> None:
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique")
        self.entries = entries
        self._digests = [bytes.fromhex(e.sha256) for e in entries]
        self._buckets = {
            e.name: TokenBucket(e.rate_per_s or rate_per_s, e.burst or burst) for e in entries
        }

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def load(cls, inline: str | None, file: Path | None, rate_per_s: float, burst: int) -> KeyRing:
        """Keys from the JSON text `inline` and/or the JSON file `file`."""
        sources = [("RECSTREAM_API_KEYS", inline)] if inline else []
        if file is not None:
            try:
                sources.append((f"API keys file {file}", file.read_text()))
            except OSError as error:
                raise ValueError(f"cannot read API keys file {file}: {error}") from None
        entries: list[KeyEntry] = []
        for source, text in sources:
            entries += _entries(text, source)
        return cls(entries, rate_per_s, burst)

    def authenticate(self, presented: str | None) -> KeyEntry | None:
        """The entry whose key is `presented`; every digest is compared, in constant time."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: KeyEntry | None = None
        for entry, expected in zip(self.entries, self._digests, strict=True):
            if hmac.compare_digest(digest, expected):
                found = entry
        return found

    def wait_s(self, entry: KeyEntry) -> float:
        return self._buckets[entry.name].take()


def _entries(text: str, source: str) -> list[KeyEntry]:
    """The key entries of JSON `text`: one entry or a list of them."""
    try:
        parsed = json.loads(text)
        return _ENTRIES.validate_python([parsed] if isinstance(parsed, dict) else parsed)
    except (ValueError, ValidationError) as error:
        raise ValueError(f"invalid {source}: {error}") from None


_ENTRIES = TypeAdapter(list[KeyEntry])


def add_to_keys_file(path: Path, entry: str) -> int:
    """Append the JSON `entry` to the keys file at `path` (created, readable by its owner
    only); returns how many entries it then holds. A name already there is refused."""
    entries = _entries(path.read_text(), f"API keys file {path}") if path.exists() else []
    added = KeyEntry.model_validate_json(entry)
    if any(e.name == added.name for e in entries):
        raise ValueError(f"{path} already has a key named {added.name!r}")
    entries.append(added)
    text = json.dumps([e.model_dump(mode="json", exclude_none=True) for e in entries], indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.touch(mode=0o600)
    partial.write_text(text + "\n")
    partial.replace(path)
    return len(entries)


def new_key(name: str, scopes: list[Scope], rate_per_s: float | None = None) -> tuple[str, str]:
    """A fresh random key and the JSON entry (its digest, never the key) to configure it."""
    key = "rsk_" + secrets.token_urlsafe(32)
    entry = KeyEntry(
        name=name,
        sha256=hashlib.sha256(key.encode()).hexdigest(),
        scopes=frozenset(scopes),
        rate_per_s=rate_per_s,
    )
    return key, entry.model_dump_json(exclude_none=True)


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require(scope: Scope) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: 401 without a known key, 403 without `scope`, 429 over the rate."""

    async def check(request: Request) -> None:
        ring: KeyRing = request.app.state.keys
        if not ring.enabled:
            return
        entry = ring.authenticate(_presented(request))
        if entry is None:
            raise HTTPException(
                401,
                "missing or unknown API key (send Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in entry.scopes:
            raise HTTPException(403, f"API key {entry.name!r} lacks the {scope!r} scope")
        wait = ring.wait_s(entry)
        if wait > 0:
            raise HTTPException(
                429,
                f"API key {entry.name!r} is over its rate limit",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        request.state.key_name = entry.name

    return check

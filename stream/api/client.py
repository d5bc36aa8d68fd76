"""A small typed client of the HTTP API for Python frontends and producers (standard library
only): recommendations, similar items, sending events, item metadata.

    client = RecstreamClient("http://127.0.0.1:8000", key)
    top = client.recommend("user-1", k=5)
    client.send_events([ClickEvent(event_id="e1", user_id="user-1", ts=now, item_id="i9")])

Answers 429 and 503 (and a connection that fails) are retried, waiting what `Retry-After`
says (else a growing backoff), up to `attempts` tries; sending events again is safe, as
ingest is idempotent on `event_id`. Any other error raises `ApiError` with the API's reason.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream.errors import StreamError
from stream.events.schema import ClickEvent, OrderEvent

RETRIED = (429, 503)


class ApiError(StreamError, RuntimeError):
    """The API refused a request; `status` and `reason` say why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status, self.reason = status, reason


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Recommendations:
    user_id: str
    items: list[Scored]
    source: str
    model_version: int | None
    as_of_event_id: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    rejected: int
    errors: list[dict[str, Any]]


class RecstreamClient:
    """One API base URL and key; each call is one request (retried as the module says)."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        max_wait_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key, self.timeout_s = key, timeout_s
        self.attempts, self.max_wait_s = max(1, attempts), max_wait_s

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        category: str | None = None,
        in_stock: bool | None = None,
        exclude: Sequence[str] = (),
        repeats: bool | None = None,
    ) -> Recommendations:
        """Top-k for a user, as the API ranks them now."""
        query = _query(
            k=k, category=category, in_stock=in_stock, exclude=",".join(exclude), repeats=repeats
        )
        body = self._call("GET", f"/v1/users/{_part(user_id)}/recommendations?{query}")
        return Recommendations(
            user_id=body["user_id"],
            items=[Scored(**item) for item in body["items"]],
            source=body["source"],
            model_version=body["model_version"],
            as_of_event_id=body["as_of_event_id"],
        )

    def similar(self, item_id: str, k: int = 10, *, category: str | None = None) -> list[Scored]:
        """Items nearest to `item_id` (ApiError 404 for an item with no vector)."""
        query = _query(k=k, category=category)
        body = self._call("GET", f"/v1/items/{_part(item_id)}/similar?{query}")
        return [Scored(**item) for item in body["items"]]

    def send_events(
        self, events: Sequence[ClickEvent | OrderEvent | Mapping[str, Any]]
    ) -> IngestResult:
        """Send up to 1,000 events in one request; per-event rejections are in the result."""
        documents = [
            json.loads(e.to_json()) if isinstance(e, ClickEvent | OrderEvent) else dict(e)
            for e in events
        ]
        body = self._call("POST", "/v1/events", documents, ok_statuses=(202, 422))
        if "errors" not in body:  # a 422 for the whole request (not JSON, no events)
            raise ApiError(422, str(body.get("reason", "refused")))
        return IngestResult(body.get("accepted", 0), body.get("rejected", 0), body["errors"])

    def put_item(
        self,
        item_id: str,
        *,
        category: str | None = None,
        brand: str | None = None,
        price: float | None = None,
        in_stock: bool = True,
        tags: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Set an item's metadata (needs the admin scope)."""
        meta = {
            "category": category,
            "brand": brand,
            "price": price,
            "in_stock": in_stock,
            "tags": list(tags),
        }
        return self._call("PUT", f"/v1/items/{_part(item_id)}", meta)

    def model(self) -> dict[str, Any]:
        """The model version this replica serves, and since when."""
        return self._call("GET", "/v1/model")

    def _call(
        self,
        method: str,
        path: str,
        payload: object = None,
        ok_statuses: tuple[int, ...] = (200, 202),
    ) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(
                self.base_url + path, data=data, headers=headers, method=method
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return _json(response.read())
            except urllib.error.HTTPError as error:
                body = _json(error.read())
                if error.code in ok_statuses:
                    return body
                reason = str(body.get("reason", error.reason))
                if error.code not in RETRIED or attempt == self.attempts:
                    raise ApiError(error.code, reason) from None
                wait = _retry_after(error.headers.get("Retry-After"), attempt)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                if attempt == self.attempts:
                    raise ApiError(0, f"cannot reach {self.base_url}: {error}") from None
                wait = _retry_after(None, attempt)
            time.sleep(min(wait, self.max_wait_s))
        raise AssertionError("unreachable")


def _retry_after(header: str | None, attempt: int) -> float:
    """Seconds to wait: `Retry-After` (seconds) when given, else 0.1 s doubling."""
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    return 0.1 * 2.0 ** (attempt - 1)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {"reason": raw[:200].decode(errors="replace")}
    return body if isinstance(body, dict) else {"items": body}


def _part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _query(**params: object) -> str:
    kept = {
        k: (str(v).lower() if isinstance(v, bool) else v)
        for k, v in params.items()
        if v not in (None, "")
    }
    return urllib.parse.urlencode(kept)

"""`POST /v1/events`: one event or an array, validated per item, produced to Kafka before 202."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stream.api.errors import error_response
from stream.api.event_log import EventLog, EventLogUnavailableError
from stream.errors import StreamError
from stream.events.producer import EventProducer
from stream.events.schema import EventError

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000
RETRY_AFTER_S = 1

router = APIRouter(tags=["events"])


class Rejection(BaseModel):
    """Why one item of the request was not accepted."""

    index: int
    event_id: str | None
    reason: str


class IngestResult(BaseModel):
    """Counts of accepted and rejected events, with a reason per rejected one."""

    accepted: int
    rejected: int
    errors: list[Rejection]


class BodyTooLargeError(StreamError):
    """The request body is over the limit."""


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _event_id(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("event_id"), str):
        return str(document["event_id"])[:128]
    return None


def _deliver(
    producer: EventProducer, documents: list[tuple[int, Any]], timeout_s: float
) -> list[Rejection]:
    """Send valid documents and wait for the broker's acks; returns per-item rejections."""
    rejections: list[Rejection] = []
    futures = []
    for index, document in documents:
        try:
            futures.append(producer.send(document))
        except EventError as error:
            rejections.append(
                Rejection(index=index, event_id=_event_id(document), reason=error.reason)
            )
    for future in futures:
        future.get(timeout=timeout_s)
    return rejections


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IngestResult,
    responses={
        413: {"description": "body or batch too large"},
        422: {"description": "no valid event"},
        503: {"description": "event log unavailable: retry (event_ids make it safe)"},
    },
)
async def ingest_events(request: Request) -> IngestResult | JSONResponse:
    """Accept one event (a JSON object) or up to 1,000 (an array) in at most 1 MiB."""
    try:
        body = await _read_body(request, MAX_BODY_BYTES)
    except BodyTooLargeError:
        return error_response(413, f"body exceeds {MAX_BODY_BYTES} bytes")
    try:
        parsed = json.loads(body)
    except RecursionError:
        return error_response(422, "body is nested too deeply")
    except ValueError as error:
        return error_response(422, f"body is not valid JSON: {error}")
    documents = parsed if isinstance(parsed, list) else [parsed]
    if len(documents) > MAX_EVENTS:
        return error_response(
            413, f"{len(documents)} events in one request; the limit is {MAX_EVENTS}"
        )
    if not documents:
        return error_response(422, "no events in the request")
    event_log: EventLog = request.app.state.event_log
    numbered = list(enumerate(documents))
    try:
        rejections = await event_log.call(
            lambda producer: _deliver(producer, numbered, event_log.timeout_s)
        )
    except EventLogUnavailableError as error:
        answer = error_response(503, f"event log unavailable, retry: {error}")
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer
    accepted = len(documents) - len(rejections)
    result = IngestResult(accepted=accepted, rejected=len(rejections), errors=rejections)
    if accepted == 0:
        return error_response(422, "no valid event in the request", **result.model_dump())
    return result

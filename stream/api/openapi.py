"""The OpenAPI document clients are generated from: every request body (events as a
discriminated union, one or a list), the error shape, and the key schemes with each route's
scope. `POST /v1/events` reads its raw body (size limits, per-item errors), so FastAPI
cannot see its schema: it is added here from the event models themselves."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field, TypeAdapter

from stream.api.events import MAX_EVENTS
from stream.events.schema import ClickEvent, OrderEvent

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/demo")
_REF = "#/components/schemas/{model}"


class ErrorOut(BaseModel):
    """Every error: the status and a reason a person can act on."""

    status: int
    reason: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown API key"},
    403: {"model": ErrorOut, "description": "the key lacks this route's scope"},
    429: {"model": ErrorOut, "description": "over the key's rate: retry after Retry-After s"},
}
_Event = Annotated[ClickEvent | OrderEvent, Field(discriminator="type")]


def install_openapi(app: FastAPI, scopes: dict[str, str]) -> None:
    """Build `app`'s OpenAPI document once, on first request, with the additions above;
    `scopes` maps a route tag to the scope its routes need."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description="Online-learning recommendations. Send `Authorization: Bearer <key>` "
            "(or `X-API-Key`); a key carries scopes: read, ingest, admin.",
            routes=app.routes,
        )
        _add_event_body(document)
        _errors_as_they_are(document)
        _add_security(document, scopes)
        app.openapi_schema = document
        return document

    app.openapi = build  # type: ignore[method-assign]


def _add_event_body(document: dict[str, Any]) -> None:
    event = TypeAdapter(_Event).json_schema(ref_template=_REF)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(event.pop("$defs", {}))
    components["Event"] = event
    one = {"$ref": "#/components/schemas/Event"}
    body = {"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_EVENTS}]}
    operation = document["paths"]["/v1/events"]["post"]
    operation["requestBody"] = {
        "required": True,
        "description": f"one event, or a list of up to {MAX_EVENTS}",
        "content": {"application/json": {"schema": body}},
    }


def _errors_as_they_are(document: dict[str, Any]) -> None:
    """422s have the same `ErrorOut` shape as every other error (not FastAPI's default)."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for operations in document["paths"].values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid["content"] = error
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _add_security(document: dict[str, Any], scopes: dict[str, str]) -> None:
    document["components"]["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key"},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    document["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            tags = operation.get("tags", [])
            scope = next((scopes[t] for t in tags if t in scopes), None)
            if scope is not None:
                needs = f"Needs a key with the `{scope}` scope."
                operation["description"] = f"{operation.get('description', '')}\n\n{needs}"

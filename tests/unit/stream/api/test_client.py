"""The Python client: retries 429/503 as Retry-After says, raises the API's reason otherwise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from stream.api.client import ApiError, RecstreamClient

ANSWER = {
    "user_id": "u 1",
    "items": [{"item_id": "i1", "score": 0.5, "reason": "personalized"}],
    "source": "personalized",
    "model_version": 3,
    "as_of_event_id": "e9",
}


class _Script(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of `script`."""

    script: ClassVar[list[tuple[int, dict[str, str], dict[str, object]]]] = []
    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, headers, body = self.script.pop(0)
        raw = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Script.script, _Script.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_busy_answers_are_retried_and_the_answer_is_typed(server: str) -> None:
    busy = {"status": 503, "reason": "busy"}
    _Script.script = [
        (503, {"Retry-After": "0"}, busy),
        (429, {"Retry-After": "0"}, busy),
        (200, {}, ANSWER),
    ]
    top = RecstreamClient(server, "rsk_x").recommend("u 1", k=1, exclude=["i0"], repeats=False)
    assert top.items[0].item_id == "i1"
    assert top.model_version == 3
    assert len(_Script.seen) == 3
    method, path, auth = _Script.seen[-1]
    assert (method, auth) == ("GET", "Bearer rsk_x")
    assert path == "/v1/users/u%201/recommendations?k=1&exclude=i0&repeats=false"


def test_other_errors_and_exhausted_retries_raise_the_apis_reason(server: str) -> None:
    _Script.script = [(404, {}, {"status": 404, "reason": "unknown item 'x'"})]
    with pytest.raises(ApiError, match="unknown item 'x'") as error:
        RecstreamClient(server).similar("x")
    assert error.value.status == 404
    assert len(_Script.seen) == 1
    _Script.script = [(429, {"Retry-After": "0"}, {"status": 429, "reason": "slow down"})] * 2
    with pytest.raises(ApiError, match="slow down"):
        RecstreamClient(server, attempts=2).recommend("u")
    assert len(_Script.seen) == 3

"""API keys: scopes, 401 vs 403, per-key rate limits, digests only in configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from stream.api.auth import KeyRing, TokenBucket, new_key, require
from stream.api.errors import install_error_handlers


def _ring(*entries: str, rate: float = 1_000.0, burst: int = 1_000) -> KeyRing:
    return KeyRing.load("[" + ",".join(entries) + "]", None, rate, burst)


def _app(ring: KeyRing) -> TestClient:
    app = FastAPI()
    app.state.keys = ring
    install_error_handlers(app)

    @app.get("/read", dependencies=[Depends(require("read"))])
    async def read() -> dict[str, str]:
        return {"ok": "read"}

    @app.post("/admin", dependencies=[Depends(require("admin"))])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    return TestClient(app)


def test_a_new_key_is_configured_by_its_digest_and_never_stored_itself() -> None:
    key, entry = new_key("web", ["read"])
    assert key not in entry
    ring = _ring(entry)
    found = ring.authenticate(key)
    assert found is not None
    assert found.name == "web"
    assert ring.authenticate(key + "x") is None
    assert ring.authenticate(None) is None


def test_no_key_is_401_and_a_key_without_the_scope_is_403() -> None:
    reader, reader_entry = new_key("reader", ["read"])
    admin, admin_entry = new_key("ops", ["admin", "read"])
    client = _app(_ring(reader_entry, admin_entry))

    missing = client.get("/read")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "API key" in missing.json()["reason"]
    assert client.get("/read", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/read", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    assert client.get("/read", headers={"X-API-Key": reader}).status_code == 200
    forbidden = client.post("/admin", headers={"X-API-Key": reader})
    assert forbidden.status_code == 403
    assert "'admin' scope" in forbidden.json()["reason"]
    assert client.post("/admin", headers={"X-API-Key": admin}).status_code == 200


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() -> None:
    slow, slow_entry = new_key("slow", ["read"], rate_per_s=0.01)
    fast, fast_entry = new_key("fast", ["read"])
    client = _app(_ring(slow_entry, fast_entry, burst=3))
    codes = [client.get("/read", headers={"X-API-Key": slow}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = client.get("/read", headers={"X-API-Key": slow})
    assert int(limited.headers["retry-after"]) >= 1
    assert client.get("/read", headers={"X-API-Key": fast}).status_code == 200


def test_without_keys_the_api_is_open() -> None:
    assert _app(KeyRing([], 1.0, 1)).get("/read").status_code == 200


def test_bad_key_configuration_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid RECSTREAM_API_KEYS"):
        KeyRing.load('[{"name": "x", "sha256": "short", "scopes": ["read"]}]', None, 1.0, 1)
    with pytest.raises(ValueError, match="invalid RECSTREAM_API_KEYS"):
        KeyRing.load(
            '[{"name": "x", "sha256": "' + "0" * 64 + '", "scopes": ["root"]}]', None, 1, 1
        )
    with pytest.raises(ValueError, match="cannot read API keys file"):
        KeyRing.load(None, tmp_path / "missing.json", 1.0, 1)
    _, entry = new_key("dup", ["read"])
    with pytest.raises(ValueError, match="unique"):
        _ring(entry, entry)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([json.loads(entry)]))
    assert KeyRing.load(None, path, 1.0, 1).entries[0].name == "dup"


def test_a_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=1_000.0, burst=2)
    assert [bucket.take() == 0.0 for _ in range(3)] == [True, True, False]
    bucket.at -= 0.01  # 10 ms later: 10 tokens' worth, capped at the burst
    assert [bucket.take() == 0.0 for _ in range(3)] == [True, True, False]

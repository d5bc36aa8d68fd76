"""Keyed pseudonyms of user ids (HMAC-SHA256), applied where ids enter: the producer SDK and
HTTP ingest before Kafka, the consumers' decoding before Redis and the model, and the API
before a lookup. A pseudonym maps to itself, so applying it twice changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from pydantic import SecretStr

_PSEUDONYM = re.compile(r"p:[0-9a-f]{32}")


class Pseudonyms:
    """`user(raw)` is `p:` + 128 bits of HMAC-SHA256(key, raw): stable while the key is."""

    def __init__(self, key: SecretStr) -> None:
        secret = key.get_secret_value().encode()
        if len(secret) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes")
        self._key = secret

    @classmethod
    def of(cls, key: SecretStr | None) -> Pseudonyms | None:
        return None if key is None else cls(key)

    def user(self, user_id: str) -> str:
        if _PSEUDONYM.fullmatch(user_id):
            return user_id
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return "p:" + digest[:32]

    def redact(self, payload: bytes, key: bytes | None) -> tuple[bytes, bytes | None]:
        """A rejected message as it may be kept: its user id (key, and `user_id` of a JSON
        object) pseudonymised; other bytes cannot be known to hold one and stay."""
        new_key = None if key is None else self.user(key.decode(errors="replace")).encode()
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):
            return payload, new_key
        if isinstance(document, dict) and isinstance(document.get("user_id"), str):
            document["user_id"] = self.user(document["user_id"])
            return json.dumps(document).encode(), new_key
        return payload, new_key

"""The `recstream` command's own behaviour (the commands it runs are tested where they live)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stream.api.auth import KeyRing
from stream.cli import main
from stream.config import Settings


def test_keys_new_adds_each_key_to_the_file_the_api_reads_and_prints_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("RECSTREAM_API_KEYS_FILE", raising=False)
    assert Settings().keys_file_read is None  # no file yet: the API reads none
    keys = []
    for name, scopes in (("web", "read"), ("collector", "ingest,read")):
        assert main(["keys", "new", "--name", name, "--scopes", scopes]) == 0
        out, err = capsys.readouterr()
        keys.append(out.strip())
        assert "api-keys.json" in err
        assert keys[-1] not in err
    path = tmp_path / "api-keys.json"
    assert Settings().keys_file_read == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys[0] not in path.read_text()  # digests only
    ring = KeyRing.load(None, Settings().keys_file_read, 1.0, 1)
    found = [ring.authenticate(key) for key in keys]
    assert [(e.name, sorted(e.scopes)) for e in found if e] == [
        ("web", ["read"]),
        ("collector", ["ingest", "read"]),
    ]
    assert main(["keys", "new", "--name", "web", "--scopes", "read"]) == 2
    assert "already has a key named 'web'" in capsys.readouterr().err
    assert len(KeyRing.load(None, path, 1.0, 1).entries) == 2


def test_keys_new_can_print_the_entry_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_DATA_DIR", str(tmp_path))
    assert main(["keys", "new", "--name", "web", "--scopes", "read", "--print-entry"]) == 0
    out, err = capsys.readouterr()
    key = err.rsplit(" ", 1)[-1].strip()
    assert KeyRing.load(out, None, 1.0, 1).authenticate(key) is not None  # one entry, no list
    assert not (tmp_path / "api-keys.json").exists()

"""The `recstream` command's own behaviour (the commands it runs are tested where they live)."""

from __future__ import annotations

import argparse
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stream.api.auth import KeyRing
from stream.cli import build_parser, main
from stream.config import GROUPS, Settings
from stream.local.stack import free_port


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


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(Settings())
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        assert isinstance(action, argparse._SubParsersAction)
        found.update(action.choices)
    return found


def test_every_setting_is_in_a_group_commands_can_name() -> None:
    grouped = {field for fields in GROUPS.values() for field in fields}
    assert set(Settings.model_fields) == grouped


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_says_what_it_does_needs_and_reads(command: str) -> None:
    text = _subcommands()[command].format_help()
    assert "Needs running:" in text or "Needs nothing running." in text
    assert _subcommands()[command].description or command in ("promote", "rollback")
    if "Needs running:" in text:
        assert "Settings it reads" in text
        assert "RECSTREAM_" in text.split("Settings it reads", 1)[1]


def test_flags_override_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Settings] = []

    def api(settings: Settings, args: argparse.Namespace) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr("stream.cli._cmd_api", api)
    monkeypatch.setenv("RECSTREAM_API_PORT", "9000")
    assert main(["api"]) == 0
    assert main(["api", "--port", "9123", "--host", "0.0.0.0", "--processes", "2"]) == 0
    assert [(s.api_host, s.api_port, s.api_processes) for s in seen] == [
        ("127.0.0.1", 9000, 1),
        ("0.0.0.0", 9123, 2),
    ]
    assert main(["api", "--port", "70000"]) == 2  # validated like the variable


def test_config_prints_every_setting_masks_secrets_and_checks_the_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("RECSTREAM_REDIS_URL", f"redis://app:hunter2@127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("RECSTREAM_PSEUDONYM_KEY", "very-secret")
    assert main(["config"]) == 1  # nothing listens there
    out = capsys.readouterr().out
    assert all(f"RECSTREAM_{field.upper()}=" in out for field in Settings.model_fields)
    assert "hunter2" not in out
    assert "very-secret" not in out
    assert "redis://app:********@127.0.0.1" in out
    assert "NOT answering" in out


def test_the_api_supervisor_starts_without_torch_faiss_or_the_app() -> None:
    """The supervisor of several API processes only spawns them: the app, the model and the
    index are the processes' imports, not its own (each costs every host ~170 MB)."""
    probe = (
        "import sys, stream.api.server as server\n"
        "server.run_api = lambda settings: print(sorted(m for m in ('torch', 'faiss', "
        "'fastapi', 'stream.wiring') if m in sys.modules))\n"
        "from stream.cli import main\n"
        "sys.exit(main(['api', '--processes', '2']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

"""The main job end to end on a short synthetic stream: it runs, reports, and cleans up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.config import Settings
from stream.evaluation.demo import DemoOptions, run_demo

pytestmark = pytest.mark.integration

KEYS = {
    "live_hr_at_10",
    "live_ndcg_at_10",
    "offline_hr_at_10",
    "offline_ndcg_at_10",
    "ingest_events_per_s",
    "freshness_p50_ms",
    "freshness_p99_ms",
    "publish_latency_ms",
    "events",
}


def _children() -> set[str]:
    """Live child processes of this one (Linux /proc)."""
    found: set[str] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update((task / "children").read_text().split())
    return {pid for pid in found if Path(f"/proc/{pid}/stat").exists()}


def test_the_demo_reports_live_beside_offline_and_stops_what_it_started(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "demo.json"
    before = _children()
    code = run_demo(settings, DemoOptions(synthetic=True, limit=3_000, json_out=out))
    figures = json.loads(out.read_text())
    assert code == 0
    assert set(figures) >= KEYS
    assert figures["events"] == 3_000
    assert 0 < figures["events_scored_live"] <= 2_400  # repeats are not scored
    assert 0 < figures["live_hr_at_10"] <= 1
    assert 0 < figures["offline_hr_at_10"] <= 1
    assert figures["ingest_events_per_s"] > 0
    assert 0 < figures["freshness_p50_ms"] <= figures["freshness_p99_ms"]
    assert figures["publish_latency_ms"] is not None
    assert _children() == before

"""The local stack's output for `eval "$(recstream stack up)"`."""

from __future__ import annotations

from stream.local.stack import StackState


def test_stack_up_prints_lines_a_shell_can_eval() -> None:
    state = StackState("127.0.0.1:5555", "redis://127.0.0.1:6379/0", 10, None)
    assert state.shell_exports().splitlines() == [
        "export RECSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:5555",
        "export RECSTREAM_REDIS_URL=redis://127.0.0.1:6379/0",
    ]

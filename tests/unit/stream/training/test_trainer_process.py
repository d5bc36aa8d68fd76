"""The trainer's process start leaves what training imports out of garbage collections."""

from __future__ import annotations

import subprocess
import sys


def test_the_trainer_starts_with_what_its_first_step_imports_already_frozen() -> None:
    """torch imports ~800 modules at the first optimiser step; imported there, they were
    traversed by every full collection of the trainer (up to 227 ms each in the soak)."""
    script = (
        "import gc, torch\n"
        "from stream.config import Settings\n"
        "from stream.training.loop import start_trainer_process\n"
        "start_trainer_process(Settings(heap_trim_s=0, trainer_nice=0))\n"
        "layer = torch.nn.Linear(4, 4)\n"
        "step = torch.optim.AdamW(layer.parameters())\n"
        "layer(torch.zeros(2, 4)).sum().backward()\n"
        "step.step()\n"
        "young = len(gc.get_objects())\n"
        "assert young < 20_000, young\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)

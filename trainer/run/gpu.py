"""What the GPU can do, asked once of a worker child process (trainer/run/worker.py): a long-lived process such
as a sweep's never initialises CUDA itself, so it holds no VRAM the trainings it starts need."""

from __future__ import annotations

import functools

from trainer.common.errors import UserError
from trainer.run.worker import Worker


@functools.cache
def gpu_facts() -> tuple[bool, bool]:
    """trainer.checks.advice.gpu_facts(): (CUDA available, bf16 supported natively); (False, False) if unknown."""
    with Worker() as worker:
        try:
            return worker.gpu_facts()
        except UserError:
            return False, False

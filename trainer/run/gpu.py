"""What the GPU can do, asked once of a child process: querying CUDA in the GUI process would give it a CUDA
context (hundreds of MB of VRAM the training then lacks)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU_QUERY_TIMEOUT_S = 120


@functools.cache
def gpu_facts() -> tuple[bool, bool]:
    """trainer.checks.advice.gpu_facts(): (CUDA available, bf16 supported natively); (False, False) if unknown."""
    argv = [sys.executable, "-c", "from trainer.checks.advice import gpu_facts; print(*gpu_facts())"]
    try:
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=GPU_QUERY_TIMEOUT_S, check=True,
                                cwd=REPO, stdin=subprocess.DEVNULL).stdout.split()
        return answer[-2] == "True", answer[-1] == "True"
    except (OSError, subprocess.SubprocessError, IndexError):
        return False, False

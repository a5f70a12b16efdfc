"""The GUI's try server (trainer/try_lora/client.py), one per GUI process. The Try tab hands it grids; whatever
starts a training (Start, the LR finder, a sweep) calls `release_model` first, so the model the server keeps
loaded between grids does not hold the GPU memory the training needs."""

from __future__ import annotations

import functools
from pathlib import Path

from trainer.common.paths import danlu_home
from trainer.try_lora.client import TryServer

SERVER_LOG = "try-server.log"  # in DANLU_HOME


@functools.cache
def try_server() -> TryServer:
    return TryServer(server_log())


def server_log() -> Path:
    """The try server's own log (a crash that no grid's console.log caught)."""
    return danlu_home() / SERVER_LOG


def release_model() -> None:
    """The try server lets its model go once the grid it renders (if any) is done."""
    try_server().release()

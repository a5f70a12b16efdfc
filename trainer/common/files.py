"""Writing a file so that a reader, or a process killed halfway, never leaves or sees half of it."""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: a killed process leaves either the
    old file or the new one under `path`, never a truncated one, and a reader sees one or the other whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ours = f".{path.name}.{os.getpid()}-"  # this process's temporary files: other threads' writes in progress
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):  # left by a killed process
        if not stale.name.startswith(ours):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f"{ours}{threading.get_ident()}.partial")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8, with the newlines as given (the same bytes on every system)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def new_dated_folder(parent: Path) -> Path:
    """parent/<YYYYmmdd-HHMMSS>, created, with -2, -3... when one of that second exists: names sort by time."""
    base = Path(parent) / time.strftime("%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder

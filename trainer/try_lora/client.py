"""The GUI's side of `python -m trainer try-server` (trainer/try_lora/serve.py), torch-free: grids are handed to
one long-lived child that keeps the base model loaded between them, so the second grid on the same model starts
at once instead of after a model load.

    server = TryServer(DANLU_HOME / "try-server.log")
    server.submit(["--run", run, "--strengths", "0,1"], folder)   # returns at once; folder/progress.jsonl follows
    server.release()    # a training needs the memory: the child ends after the grids asked for

The child is started on the first grid and again after it ended. It is released once no grid has been running for
`keep_s` (the memory a model holds is the user's, not the GUI's, when they stop trying). Each grid folder gets a
process.json naming the child, so a reloaded page can tell a grid still rendering from one whose process died.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from trainer.common.files import atomic_write_text
from trainer.run.child import PROCESS_FILE, start_piped, trainer_argv
from trainer.try_lora.grid import PROGRESS_FILE

KEEP_S = 600.0  # the model stays loaded this long after the last grid ended
CHECK_S = 30.0  # how often an idle child is looked at


class TryServer:
    """One try-server child at a time; thread-safe."""

    def __init__(self, log: Path | None = None, keep_s: float = KEEP_S, check_s: float = CHECK_S):
        self.log, self.keep_s, self.check_s = log, keep_s, check_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._folders: list[Path] = []  # the grids asked of the running child
        self._idle_since = 0.0
        self._timer: threading.Timer | None = None

    def submit(self, args: Sequence[str | Path], folder: Path) -> None:
        """Render `python -m trainer try ARGS --out folder` in the child (queued behind a grid it renders now)."""
        request = json.dumps({"args": [str(arg) for arg in args], "out": str(folder)}, ensure_ascii=False)
        with self._lock:
            process = self._ensure_started()
            try:
                process.stdin.write(request + "\n")
                process.stdin.flush()
            except (OSError, ValueError):  # it ended just now: once more with a new one
                process = self._ensure_started()
                process.stdin.write(request + "\n")
                process.stdin.flush()
            self._folders.append(folder)
            record = {"pid": process.pid, "started_at": time.time(), "argv": trainer_argv(["try-server"])}
            atomic_write_text(folder / PROCESS_FILE, json.dumps(record, ensure_ascii=False, indent=1))
            self._arm()

    def release(self) -> None:
        """Close the child's input: it renders the grids already asked for, lets the model go and ends."""
        with self._lock:
            self._release()

    # --- the process -----------------------------------------------------------------------------------------

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._release()
        log = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log, "ab")
        try:
            self._process = start_piped(["try-server"], stderr=log, stdout=log)
        finally:
            if log is not None:
                log.close()  # the child has its own handle
        return self._process

    def _release(self) -> None:
        process, self._process = self._process, None
        self._folders = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._idle_since = time.monotonic()
        self._timer = threading.Timer(self.check_s, self._check_idle)
        self._timer.daemon = True
        self._timer.start()

    def _check_idle(self) -> None:
        with self._lock:
            if self._process is None:
                return
            if self._process.poll() is not None or (not self._rendering() and
                                                     time.monotonic() - self._idle_since >= self.keep_s):
                self._release()
                return
            if self._rendering():
                self._idle_since = time.monotonic()
            self._timer = threading.Timer(self.check_s, self._check_idle)
            self._timer.daemon = True
            self._timer.start()

    def _rendering(self) -> bool:
        """A grid asked of the child has not finished yet."""
        return not all(_finished(folder) for folder in self._folders)


def _finished(folder: Path) -> bool:
    try:
        text = (folder / PROGRESS_FILE).read_text(encoding="utf-8")
    except OSError:
        return False
    return '"type": "finished"' in text

"""The training the page shows: the one this GUI started, or the one it finds again after a reload or restart.

One per GUI process (one training at a time), shared by every open page; the page polls `view()` about once a
second. Reading the run folder is cheap (trainer/run_state.py), so a poll never blocks on the training. A page
whose output_dir holds no live training sees that folder's newest run, or none: never an older run elsewhere.
"""

from __future__ import annotations

import threading
from pathlib import Path

from trainer.config import TrainConfig
from trainer.run import runner
from trainer.run.state import EVENTS_FILE, RunReader, RunState

from .try_server import release_model

PAST_READERS = 8  # finished runs whose readers are kept (one per output folder a page showed recently)


class RunMonitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handle: runner.RunHandle | None = None
        self._reader: RunReader | None = None
        self._past: dict[Path, RunReader] = {}

    def start(self, config: TrainConfig) -> runner.RunHandle:
        """Start training a validated config (runner.start: AlreadyRunning) and watch it."""
        with self._lock:
            release_model()
            handle = runner.start(config)
            self._watch(handle)
            return handle

    def poll(self, output_dirs: list[Path]) -> RunState | None:
        """The watched run's state; when none is watched (or the watched one is over), a live training in one of
        output_dirs is found and watched (a restarted GUI reattaches this way)."""
        with self._lock:
            if self.handle is None or (not self.handle.alive and self._reader.state.is_over):
                found = runner.find_running([d for d in output_dirs if d])
                if found is not None and (self.handle is None or found.run_dir != self.handle.run_dir):
                    self._watch(found)
            if self.handle is None:
                return None
            alive, exit_code = self.handle.alive, self.handle.exit_code  # read before the events: none is missed
            return self._reader.update(alive, exit_code)

    def view(self, output_dir: Path | None) -> tuple[Path | None, RunState | None]:
        """What a page whose form names output_dir shows: the live training (wherever it writes), else the newest
        run in output_dir (over), else (None, None): "no training in this output folder yet"."""
        state = self.poll([output_dir] if output_dir else [])
        if state is not None and not state.is_over:
            return self.run_dir, state
        newest = latest_run(output_dir) if output_dir else None
        if newest is None:
            return None, None
        if newest == self.run_dir:
            return newest, state
        with self._lock:
            reader = self._past.pop(newest, None) or RunReader(newest)
            self._past[newest] = reader  # most recently shown last
            while len(self._past) > PAST_READERS:
                self._past.pop(next(iter(self._past)))
        return newest, reader.update(alive=False)

    def stop(self, timeout_s: float) -> runner.StopResult | None:
        """Ask the watched training to stop (None when none runs); blocks until it ended or was killed."""
        handle = self.handle
        if handle is None or not handle.alive:
            return None
        return handle.stop(timeout_s)

    @property
    def run_dir(self) -> Path | None:
        return self.handle.run_dir if self.handle is not None else None

    def _watch(self, handle: runner.RunHandle) -> None:
        self.handle, self._reader = handle, RunReader(handle.run_dir)


def latest_run(output_dir: Path) -> Path | None:
    """output_dir's newest run folder (runs/<YYYYmmdd-HHMMSS>, so the names sort by time), or None."""
    runs = Path(output_dir).expanduser() / "runs"  # trainer.run.events.new_run_dir
    try:
        found = sorted(p for p in runs.iterdir() if (p / EVENTS_FILE).is_file() or (p / runner.CONFIG_FILE).is_file())
    except OSError:
        return None
    return found[-1].resolve() if found else None

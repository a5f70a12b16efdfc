"""The output folder's lock: one training at a time writes an output_dir (docs/architecture.md).

output_dir/.danlu-lock.json names the training that writes there: {pid, host, started_at (its process's start
time, so a reused pid is not taken for it), run_dir}. Every training takes it before it writes anything
(trainer/training/start.py) and removes it when it ends; a lock left by a killed process (its pid is gone) is
stale and taken over. The GUI reads it to find a training started from the command line (runner.find_running).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil  # already installed: accelerate depends on it

from trainer.common.errors import ConfigError, UserError
from trainer.common.places import folder_place_problems

LOCK_FILE = ".danlu-lock.json"
START_SLACK_S = 1.0  # psutil's start times are rounded differently between calls on some systems


class OutputBusy(UserError):
    """Another training writes this output_dir; names the folder and that training's process."""


@dataclass(frozen=True)
class Holder:
    """The training a lock names."""

    pid: int
    host: str
    started_at: float
    run_dir: Path | None  # None until the run folder is made

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()

    @property
    def alive(self) -> bool:
        """Its process still runs; a lock from another computer (a shared folder) cannot be checked: it counts."""
        if not self.here:
            return True
        try:
            process = psutil.Process(self.pid)
            return process.status() != psutil.STATUS_ZOMBIE \
                and abs(process.create_time() - self.started_at) <= START_SLACK_S
        except psutil.Error:
            return False


def read_holder(output_dir: Path) -> Holder | None:
    """The lock's holder, alive or not; None without a readable lock (a process killed while writing it)."""
    try:
        info = json.loads((Path(output_dir) / LOCK_FILE).read_text(encoding="utf-8"))
        run_dir = info.get("run_dir")
        return Holder(int(info["pid"]), str(info["host"]), float(info["started_at"]),
                      Path(run_dir) if run_dir else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def live_holder(output_dir: Path) -> Holder | None:
    holder = read_holder(output_dir)
    return holder if holder is not None and holder.alive else None


def check_free(output_dir: Path) -> None:
    """Raise OutputBusy when a live training holds output_dir's lock."""
    holder = live_holder(output_dir)
    if holder is None:
        return
    where = f" (run folder {holder.run_dir})" if holder.run_dir else ""
    host = "" if holder.here else f" on {holder.host}"
    raise OutputBusy(f"'{output_dir}' is being written by another training: PID {holder.pid}{host}{where}",
                     "wait for it to finish or stop it, or choose another output_dir"
                     + ("" if holder.here else f"; if nothing runs there, delete {Path(output_dir) / LOCK_FILE}"),
                     key="output_dir")


class OutputLock:
    """Holds output_dir's lock while the `with` block runs. In a run of several processes (torchrun) only the main
    one (RANK 0) takes it."""

    def __init__(self, output_dir: Path, take: bool = True):
        self.output_dir = Path(output_dir)
        self.take = take  # False: another process holds it for this one (a launcher, the main machine)
        self.path = self.output_dir / LOCK_FILE
        self.held = False
        self._record = {"pid": os.getpid(), "host": socket.gethostname(),
                        "started_at": psutil.Process().create_time(), "run_dir": None}

    def __enter__(self) -> OutputLock:
        if self.take and os.environ.get("RANK", "0") == "0":
            self._acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        holder = read_holder(self.output_dir)
        if self.held and holder is not None and holder.pid == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def record_run(self, run_dir: Path) -> None:
        """Name the run folder in the lock, so a GUI finds the run (runner.find_running)."""
        if self.held:
            self._record["run_dir"] = str(Path(run_dir).resolve())
            tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.partial")
            tmp.write_text(json.dumps(self._record), encoding="utf-8")
            os.replace(tmp, self.path)

    def _acquire(self) -> None:
        problems = folder_place_problems(self.output_dir, "output_dir")
        if problems:
            raise ConfigError(problems)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a stale lock is removed once, then created anew
            try:
                with open(self.path, "x", encoding="utf-8") as file:
                    json.dump(self._record, file)
                self.held = True
                return
            except FileExistsError:
                check_free(self.output_dir)
                self.path.unlink(missing_ok=True)  # stale: its training was killed
        check_free(self.output_dir)  # another training took the stale lock first
        raise OutputBusy(f"'{self.output_dir}': could not take {LOCK_FILE}", "start the training again",
                         key="output_dir")

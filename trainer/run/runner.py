"""Starting, finding and stopping the training process: one training at a time (docs/architecture.md).

The training runs as `python -m trainer train RUN/config.yaml --run-dir RUN`, started as every detached child
(trainer/run/child.py): its own process group, its stdout and stderr in RUN/console.log, and RUN/process.json
recording {pid, started_at, argv}, so a reloaded page or a restarted GUI finds it again (`find_running`). Nothing
here imports torch.

    handle = start(load_config(Path("my.yaml")))  # a validated config; AlreadyRunning on refusal
    handle.alive, handle.exit_code, handle.run_dir
    handle.stop()                            # "stopped" (clean: the trainer saved) or "forced" (killed)
    find_running([Path("outputs/my_lora")])  # after a restart: the live run, or None
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil  # already installed: accelerate depends on it

from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.config.io import config_to_yaml
from trainer.run.child import PROCESS_FILE, start_detached
from trainer.run.events import STOP_FILE, new_run_dir
from trainer.run.lock import check_free, live_holder
from trainer.run.state import CONSOLE_LOG, EVENTS_FILE, tail_lines

CONFIG_FILE = "config.yaml"
KILL_GRACE_S = 5.0  # after SIGTERM, how long the process group gets before SIGKILL
PID_START_SLACK_S = 2.0  # process.json is written just after the spawn: the process cannot be younger than that

StopResult = Literal["stopped", "forced"]

_active: RunHandle | None = None  # the run this GUI process started or reattached to


class AlreadyRunning(UserError):
    """Start was asked while a training runs; names the running run folder."""


@dataclass
class RunHandle:
    """One training process. `popen` is set only in the process that started it; a reattached handle (from
    `find_running`) knows the process by pid and cannot learn its exit code."""

    run_dir: Path
    pid: int
    started_at: float
    popen: subprocess.Popen | None = field(default=None, repr=False)
    named: bool = True  # its command line names run_dir (started as a child); False: found by output_dir's lock

    @property
    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _is_our_process(self.pid, self.run_dir if self.named else None, self.started_at)

    @property
    def exit_code(self) -> int | None:
        """The exit status once it ended (negative: killed by that signal on POSIX); None while it runs, and
        always None for a reattached handle (the events tell how it ended)."""
        return self.popen.poll() if self.popen is not None else None

    def stop(self, timeout_s: float = 60.0) -> StopResult:
        """Ask for a clean stop (the STOP file: the trainer saves, then exits); kill the process group if it has
        not ended after timeout_s. A forced stop is noted in console.log and as events (a warning banner and
        `finished` stopped), since the killed trainer could not write them."""
        if not self.alive:
            return "stopped"
        (self.run_dir / STOP_FILE).touch()
        if self._wait(timeout_s):
            return "stopped"
        self._kill_group()
        _append_line(self.run_dir / CONSOLE_LOG,
                     f"[danlu] the training did not stop within {timeout_s:g}s of the stop request; it was killed")
        _append_events(self.run_dir / EVENTS_FILE, [
            {"type": "health", "level": "warning", "code": "forced_stop",
             "message": f"the training did not stop within {timeout_s:g}s and was killed",
             "hint": "the LoRA was not saved at this point; the last saved epoch file is kept",
             "message_zh": f"训练在 {timeout_s:g} 秒内没有停下，已被强制结束",
             "hint_zh": "这一刻的 LoRA 没有保存；之前保存的轮次文件仍然保留"},
            {"type": "finished", "status": "stopped", "forced": True},
        ])
        return "forced"

    def _wait(self, timeout_s: float) -> bool:
        """True once the process has ended, False if it still runs after timeout_s."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while self.alive:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def _kill_group(self) -> None:
        """Terminate the trainer and its children (torchrun workers, data loader workers), then kill them."""
        if os.name == "posix":  # its own session: the process group id is its pid
            _signal_group(self.pid, signal.SIGTERM)
            if not self._wait(KILL_GRACE_S):
                _signal_group(self.pid, signal.SIGKILL)
        else:
            _kill_tree(self.pid)
        self._wait(KILL_GRACE_S)  # reaps a child of ours, so it does not linger as a zombie


def start(config: TrainConfig, output_dir: Path | str | None = None) -> RunHandle:
    """Start training a config the caller validated; returns at once, while the training runs.

    output_dir, when given, replaces the config's output_dir (so the LoRA and the run folder stay together). The
    run folder is output_dir/runs/<YYYYmmdd-HHMMSS>; its config.yaml is the full config with its version. Raises
    AlreadyRunning when a training is alive in this GUI or in that output_dir.
    """
    global _active
    if output_dir is not None:
        config = config.model_copy(update={"output_dir": str(output_dir)})
    out = Path(config.output_dir).expanduser().resolve()
    running = _active if _active is not None and _active.alive else find_running([out])
    if running is not None:
        raise AlreadyRunning(f"a training is already running in {running.run_dir} (PID {running.pid})",
                             "stop it, or wait for it to finish, before starting another")
    check_free(out)  # a training on another computer writing a shared folder
    run_dir = new_run_dir(out)
    config_file = run_dir / CONFIG_FILE
    config_file.write_text(config_to_yaml(config), encoding="utf-8")
    child = start_detached(["train", config_file, "--run-dir", run_dir], run_dir)
    _active = RunHandle(run_dir, child.pid, child.started_at, child.popen)
    return _active


def find_running(output_dirs: list[Path]) -> RunHandle | None:
    """The live training among output_dir/runs/*, newest first, or None. A run counts when its process.json pid
    is alive, is the process that was started for it (its command line names the run folder and it is not
    younger than process.json says: a reused pid is not mistaken for it), and events.jsonl has no `finished`
    event; or when output_dir's lock names a live process of this computer (a training started from the command
    line, trainer/run/lock.py). A found run becomes this GUI's active run, so `start` refuses while it lives."""
    global _active
    for output_dir in output_dirs:
        folder = Path(output_dir).expanduser().resolve()
        handle = _reattach_recorded(folder / "runs") or _reattach_locked(folder)
        if handle is not None:
            _active = handle
            return handle
    return None


def _reattach_recorded(runs: Path) -> RunHandle | None:
    for record in sorted(runs.glob(f"*/{PROCESS_FILE}"), reverse=True):
        handle = _reattach(record)
        if handle is not None:
            return handle
    return None


def _reattach_locked(output_dir: Path) -> RunHandle | None:
    holder = live_holder(output_dir)
    if holder is None or not holder.here or holder.run_dir is None or _has_finished(holder.run_dir):
        return None
    return RunHandle(holder.run_dir, holder.pid, holder.started_at, named=False)


def active() -> RunHandle | None:
    """The run this GUI process started or reattached to, while it is alive."""
    return _active if _active is not None and _active.alive else None


def _reattach(record: Path) -> RunHandle | None:
    run_dir = record.parent
    try:
        info = json.loads(record.read_text(encoding="utf-8"))
        pid, started_at = int(info["pid"]), float(info["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _has_finished(run_dir) or not _is_our_process(pid, run_dir, started_at):
        return None
    return RunHandle(run_dir, pid, started_at)


def _has_finished(run_dir: Path) -> bool:
    """The `finished` event is the trainer's last line: the tail of events.jsonl is enough."""
    for line in tail_lines(run_dir / EVENTS_FILE, 3):
        try:
            if json.loads(line).get("type") == "finished":
                return True
        except (ValueError, AttributeError):
            continue
    return False


def _is_our_process(pid: int, run_dir: Path | None, started_at: float) -> bool:
    """pid runs, is no zombie, and is the trainer of run_dir (not a later process that got the same pid); with
    run_dir None (a lock's process) its start time alone tells."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.create_time() > started_at + PID_START_SLACK_S:
            return False
        if run_dir is None:
            return True
        try:
            return str(run_dir) in process.cmdline()
        except psutil.AccessDenied:  # another user's process on some systems: the start time must do
            return True
    except psutil.Error:  # NoSuchProcess, ZombieProcess, AccessDenied on status/create_time
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """A started child leads its own process group; a training started from a terminal may not."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        _signal_process(pid, sig)
    except PermissionError:
        pass


def _signal_process(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _kill_tree(pid: int) -> None:
    """Windows: terminate the trainer and its descendants, then kill those still there after the grace time."""
    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, remaining = psutil.wait_procs(processes, timeout=KILL_GRACE_S)
    for process in remaining:
        try:
            process.kill()
        except psutil.Error:
            pass


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _append_events(path: Path, events: list[dict[str, Any]]) -> None:
    """Written by the GUI only once the trainer is dead; a line it left half-written is closed first (readers
    then skip it as not JSON)."""
    with open(path, "ab+") as file:
        file.seek(0, os.SEEK_END)
        prefix = b""
        if file.tell() > 0:
            file.seek(-1, os.SEEK_END)
            prefix = b"" if file.read(1) == b"\n" else b"\n"
        lines = [json.dumps({"t": round(time.time(), 3), **event}, ensure_ascii=False) for event in events]
        file.write(prefix + ("\n".join(lines) + "\n").encode("utf-8"))

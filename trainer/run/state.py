"""Reading a run directory while a training writes it (docs/architecture.md).

Pure file reading: no torch, no Gradio, so the GUI can poll it about once a second without blocking. The usual
loop is one `RunReader` per watched run:

    reader = RunReader(handle.run_dir)
    state = reader.update(alive=handle.alive, exit_code=handle.exit_code)   # every second or so
    state.status, state.step, state.total_steps, state.losses, state.samples, state.banners ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
TRAIN_LOG = "train.log"
CONSOLE_LOG = "console.log"  # the child's stdout and stderr (trainer/runner.py): also holds tracebacks and "error:"
LOG_LINES = 40  # how many log lines a failure banner shows
SMOOTHING = 0.9  # the loss curve's EMA weight, TensorBoard's default smoothing

STARTING, RUNNING = "starting", "running"
COMPLETED, STOPPED, FAILED = "completed", "stopped", "failed"  # the `finished` event's statuses
FINAL_STATUSES = (COMPLETED, STOPPED, FAILED)

# Text that says which memory ran out; the first list is a GPU (CUDA, ROCm, Apple), the second the computer's RAM.
GPU_OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "HIP out of memory", "MPS backend out of memory")
RAM_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "MemoryError", "Cannot allocate memory")
KILLED_EXIT_CODES = (-9, 137)  # SIGKILL: seen directly (-signal) or through a launcher (128 + signal)


class EventTail:
    """Reads events.jsonl incrementally: each `read_new()` returns the events appended since the last call.

    A missing file reads as no events (the child has not created it yet). A last line without its newline is
    being written: it is left for the next call. A complete line that is not JSON (cut short by a killed writer,
    then followed by newer lines) is skipped.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._offset = 0  # bytes consumed so far; always just after a newline

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        events = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # also UnicodeDecodeError
                continue
            if isinstance(record, dict):
                events.append(record)
        return events


@dataclass(frozen=True)
class Banner:
    """A health warning or an error to show above the run: level is info, warning or error. One banner per
    problem: the same code and level again counts up and shows the latest message."""

    level: str
    code: str
    message: str
    hint: str = ""
    count: int = 1  # how many events of this problem the run wrote
    message_zh: str = ""  # the message and hint in Chinese, when the writer gave them
    hint_zh: str = ""


@dataclass(frozen=True)
class Checkpoint:
    path: str
    epoch: int
    step: int


@dataclass(frozen=True)
class Sample:
    path: str
    epoch: int
    step: int
    prompt: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """Why a training process ended without its `finished` event, and what to try."""

    message: str
    hint: str
    log_lines: list[str]
    message_zh: str = ""  # the message and hint in Chinese (the GUI's zh page)
    hint_zh: str = ""


@dataclass
class RunState:
    """Everything the page shows about one run, folded from its events by `apply`.

    status: starting (no event yet), running, then completed, stopped or failed (the `finished` event's status,
    or failed when the process died without one). smoothed_losses is TensorBoard's smoothing: an exponential
    moving average with weight SMOOTHING, debiased so the first points are not pulled towards 0; non-finite
    losses (NaN) are kept in `losses` and skipped by the average.
    """

    status: str = STARTING
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    step: int = 0
    epoch: int = 0
    it_s: float | None = None
    eta_s: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    smoothed_losses: list[tuple[int, float]] = field(default_factory=list)
    lrs: list[tuple[int, float]] = field(default_factory=list)
    # D-Adaptation/Prodigy: d·lr of the first group, the step size they found (what an LR finder run reads)
    effective_lrs: list[tuple[int, float]] = field(default_factory=list)
    sample_list: list[Sample] = field(default_factory=list)  # in the order written; see `samples`
    checkpoints: list[Checkpoint] = field(default_factory=list)
    banners: list[Banner] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)  # set when the process died without a `finished` event
    _ema: float = field(default=0.0, repr=False)
    _ema_count: int = field(default=0, repr=False)

    @property
    def is_over(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def fraction(self) -> float:
        """Progress from 0 to 1 for the progress bar."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps else 0.0

    @property
    def smoothed_loss(self) -> float | None:
        return self.smoothed_losses[-1][1] if self.smoothed_losses else None

    @property
    def samples(self) -> list[tuple[int, list[str]]]:
        """Sample image paths grouped by epoch, newest epoch first; newest step first inside an epoch."""
        groups: dict[int, list[Sample]] = {}
        for sample in self.sample_list:
            groups.setdefault(sample.epoch, []).append(sample)
        return [(epoch, [s.path for s in sorted(groups[epoch], key=lambda s: -s.step)])  # stable: prompt order
                for epoch in sorted(groups, reverse=True)]

    def apply(self, events: list[dict[str, Any]]) -> None:
        """Fold events (as EventTail returns them) into this state; unknown types are ignored."""
        for event in events:
            handler = _HANDLERS.get(event.get("type", ""))
            if handler is not None:
                handler(self, event)

    def process_died(self, diagnosis: Diagnosis) -> None:
        """The process is gone and wrote no `finished` event (killed, out of memory, crashed hard)."""
        self.status = FAILED
        self.banners.append(Banner("error", "process_exit", diagnosis.message, diagnosis.hint,
                                   message_zh=diagnosis.message_zh, hint_zh=diagnosis.hint_zh))
        self.log_tail = diagnosis.log_lines

    def _on_plan(self, event: dict[str, Any]) -> None:
        self._mark_running()
        self.total_steps = event.get("total_steps")
        self.steps_per_epoch = event.get("steps_per_epoch")
        self.epochs = event.get("epochs")

    def _on_step(self, event: dict[str, Any]) -> None:
        self._mark_running()
        step = int(event["step"])
        self.step, self.epoch = step, int(event.get("epoch", self.epoch))
        self.it_s, self.eta_s = event.get("it_s"), event.get("eta_s")
        loss = float(event["loss"])
        self.losses.append((step, loss))
        if math.isfinite(loss):
            self._ema = self._ema * SMOOTHING + (1 - SMOOTHING) * loss
            self._ema_count += 1
            self.smoothed_losses.append((step, self._ema / (1 - SMOOTHING ** self._ema_count)))
        if event.get("lr") is not None:
            self.lrs.append((step, float(event["lr"])))
        if event.get("lr_effective"):
            self.effective_lrs.append((step, float(next(iter(event["lr_effective"].values())))))

    def _on_sample(self, event: dict[str, Any]) -> None:
        self.sample_list.append(Sample(event["path"], int(event.get("epoch", 0)), int(event.get("step", 0)),
                                       event.get("prompt", "")))

    def _on_checkpoint(self, event: dict[str, Any]) -> None:
        self.checkpoints.append(Checkpoint(event["path"], int(event.get("epoch", 0)), int(event.get("step", 0))))

    def _on_health(self, event: dict[str, Any]) -> None:
        self._add_banner(Banner(event.get("level", "warning"), event.get("code", ""), event.get("message", ""),
                                event.get("hint", ""), 1, event.get("message_zh", ""), event.get("hint_zh", "")))

    def _add_banner(self, banner: Banner) -> None:
        """A problem seen before (same code and level) replaces its banner, counted, where it stood."""
        for index, shown in enumerate(self.banners):
            if (shown.code, shown.level) == (banner.code, banner.level):
                self.banners[index] = dataclasses.replace(banner, count=shown.count + 1)
                return
        self.banners.append(banner)

    def _on_error(self, event: dict[str, Any]) -> None:
        self._add_banner(Banner("error", event.get("code", "error"), event.get("message", ""),
                                event.get("hint", ""), 1, event.get("message_zh", ""), event.get("hint_zh", "")))

    def _on_finished(self, event: dict[str, Any]) -> None:
        status = event.get("status")
        self.status = status if status in FINAL_STATUSES else FAILED

    def _mark_running(self) -> None:
        if not self.is_over:
            self.status = RUNNING


_HANDLERS = {
    "plan": RunState._on_plan, "step": RunState._on_step, "sample": RunState._on_sample,
    "checkpoint": RunState._on_checkpoint, "health": RunState._on_health, "error": RunState._on_error,
    "finished": RunState._on_finished,
}


class RunReader:
    """The state of one run directory, kept up to date by `update()` (call it about once a second)."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        self.state = RunState()
        self._tail = EventTail(self.run_dir / EVENTS_FILE)

    def update(self, alive: bool = True, exit_code: int | None = None) -> RunState:
        """Read new events. Pass alive=False once the process is gone (read `alive` BEFORE calling, so no event
        written before the exit is missed): without a `finished` event the run is then marked failed with a
        diagnosis and the last log lines."""
        self.state.apply(self._tail.read_new())
        if not alive and not self.state.is_over:
            self.state.process_died(diagnose_exit(self.run_dir, exit_code))
        return self.state


def diagnose_exit(run_dir: Path | str, exit_code: int | None) -> Diagnosis:
    """Message and hint for a process that ended without a `finished` event; exit_code None when unknown (a
    process this GUI did not start itself)."""
    run_dir = Path(run_dir)
    # console.log holds the log lines too (the trainer prints them) plus tracebacks and "error:" lines.
    lines = last_log_lines(run_dir, LOG_LINES, CONSOLE_LOG) or last_log_lines(run_dir, LOG_LINES)
    text = "\n".join(lines)
    details = "see the last log lines below, and console.log and train.log in the run folder"
    details_zh = "请看下面最后几行日志，以及运行文件夹里的 console.log 和 train.log"
    if any(marker in text for marker in GPU_OOM_MARKERS):
        return Diagnosis("the GPU ran out of memory", "lower train_batch_size or resolution, turn on "
                         "gradient_checkpointing and cache_latents, or use mixed_precision bf16 or fp16", lines,
                         "爆显存了（显卡内存不足）", "请调低 train_batch_size 或分辨率，打开 gradient_checkpointing 和 "
                         "cache_latents，或使用 mixed_precision bf16 或 fp16")
    if any(marker in text for marker in RAM_OOM_MARKERS):
        return Diagnosis("the computer ran out of memory (RAM)", "lower train_batch_size, resolution or "
                         "max_data_loader_n_workers, and close other programs", lines, "电脑内存（RAM）不足",
                         "请调低 train_batch_size、分辨率或 max_data_loader_n_workers，并关掉其他程序")
    if exit_code in KILLED_EXIT_CODES:
        return Diagnosis("the training process was killed (out of memory?)", "the system kills the largest "
                         "process when RAM runs out: lower train_batch_size, resolution or "
                         "max_data_loader_n_workers, close other programs, and look for 'Out of memory' in the "
                         "system log", lines, "训练进程被系统结束了（内存不足？）",
                         "内存耗尽时系统会结束占用最大的进程：请调低 train_batch_size、分辨率或 "
                         "max_data_loader_n_workers，关掉其他程序，并在系统日志里查找 'Out of memory'")
    if exit_code is not None and exit_code < 0:
        signal_name = _signal_name(-exit_code)
        return Diagnosis(f"the training process was ended by signal {signal_name}", details, lines,
                         f"训练进程被信号 {signal_name} 结束", details_zh)
    errors = [line[len("error:"):].strip() for line in lines if line.startswith("error:")]
    hints = [line[len("hint:"):].strip() for line in lines if line.startswith("hint:")]
    if errors:  # the CLI's one-line messages, e.g. a config error before training started
        return Diagnosis(errors[-1], hints[-1] if hints else details, lines, f"训练进程报错：{errors[-1]}",
                         hints[-1] if hints else details_zh)
    if exit_code is None:
        return Diagnosis("the training process ended without finishing", details, lines, "训练进程没有完成就结束了",
                         details_zh)
    return Diagnosis(f"the training process exited with code {exit_code} without finishing", details, lines,
                     f"训练进程没有完成就退出了（退出码 {exit_code}）", details_zh)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def last_log_lines(run_dir: Path | str, n: int = LOG_LINES, name: str = TRAIN_LOG) -> list[str]:
    """The last n lines of a log in the run folder (train.log unless `name` says otherwise); [] if missing."""
    return tail_lines(Path(run_dir) / name, n)


def tail_lines(path: Path, n: int, block: int = 8192) -> list[str]:
    """The last n lines of a file, read backwards from its end in blocks, so a long log costs no more than a
    short one. Carriage returns (progress bars) count as line ends."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as file:
            position = file.seek(0, os.SEEK_END)
            data = b""
            while position > 0 and data.count(b"\n") <= n:
                size = min(block, position)
                position -= size
                file.seek(position)
                data = file.read(size) + data
    except FileNotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]

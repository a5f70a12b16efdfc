"""The run directory: the only channel between a training process and whoever watches it (docs/architecture.md).

events.jsonl gets one JSON object a line, flushed per event; train.log the human-readable log;
tb/ TensorBoard scalars and images. Only the main process writes (`enabled`).

SIGTERM (the OS, a process manager, a forced stop's first signal) is a stop request like the STOP file: the loop
saves and writes `finished: stopped`. A second SIGTERM, or TERM_GRACE_S without an end, ends the process at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainer.common.files import new_dated_folder

STOP_FILE = "STOP"
TERM_GRACE_S = 60.0  # after SIGTERM, how long a run has to save and end before it ends at once
TERMINATED = 128 + signal.SIGTERM  # the exit status of a run ended at once, as a shell reports a SIGTERM


def new_run_dir(output_dir: Path, kind: str = "runs") -> Path:
    """output_dir/<kind>/<YYYYmmdd-HHMMSS> (kind: runs, or sweeps), with a suffix when two start in the same
    second."""
    return new_dated_folder(output_dir / kind)


class RunLog:
    """Writes events, the log and TensorBoard data of one run."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = run_dir
        self.samples_dir = run_dir / "samples"
        self.enabled = enabled
        if enabled:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
        self._logger = _make_logger(run_dir / "train.log" if enabled else None)
        self._events = None
        self._tb = None
        self._terminated = False
        self._grace: threading.Timer | None = None
        self._catching = False
        self._previous_term = None
        if enabled:
            self._events = open(run_dir / "events.jsonl", "a", encoding="utf-8")
            self._catch_term()

    def event(self, type: str, **fields: Any) -> None:
        if self._events is None:
            return
        record = {"t": round(time.time(), 3), "type": type, **fields}
        self._events.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._events.flush()

    def health(self, level: str, code: str, message: str, hint: str, step: int, **fields: Any) -> None:
        """A `health` event (docs/training.md, "The 炸炉 detector"), also in train.log and in TensorBoard: the text under `health`, and a
        scalar health/<code> = 1 that marks the step on the curves."""
        self.event("health", level=level, code=code, message=message, hint=hint, step=step, **fields)
        log = {"error": self._logger.error, "warning": self._logger.warning}.get(level, self._logger.info)
        log(f"health {code}: {message} (hint: {hint})")
        writer = self._writer()
        if writer is not None:
            writer.add_text("health", f"**{level} {code}** at step {step}: {message}  \nhint: {hint}", step)
            writer.add_scalar(f"health/{code}", 1, step)
            writer.flush()

    def info(self, message: str) -> None:
        self._logger.info(message)

    def warning(self, message: str) -> None:
        self._logger.warning(message)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One TensorBoard event holding all of a step's values: each event wakes TensorBoard's writer thread,
        which then contends with the training loop for the GIL (docs/benchmarks.md, "Loop overhead")."""
        writer = self._writer()
        if writer is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))
                                                          for tag, value in values.items()]), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """image: HxWx3 uint8."""
        writer = self._writer()
        if writer is not None:
            writer.add_image(tag, image, step, dataformats="HWC")
            writer.flush()

    def stop_requested(self) -> bool:
        return self._terminated or (self.run_dir / STOP_FILE).exists()

    def _catch_term(self) -> None:
        """Signal handlers can only be set from the main thread: a run in another thread keeps the default."""
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
            self._catching = True

    def _on_term(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a forked data loader worker inherited the handler: end as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if self._terminated:
            self._end_at_once("a second SIGTERM")
        self._terminated = True
        self.info(f"SIGTERM: stopping after this step, saving first (a second SIGTERM, or {TERM_GRACE_S:g}s without "
                  "an end, ends the run at once)")
        self._grace = threading.Timer(TERM_GRACE_S, self._end_at_once, (f"no end {TERM_GRACE_S:g}s after SIGTERM",))
        self._grace.daemon = True
        self._grace.start()

    def _end_at_once(self, why: str) -> None:
        """The files saved so far stay (every save is atomic); this point is not saved."""
        self.warning(f"{why}: the run ends at once, without saving")
        self.event("finished", status="stopped", forced=True)
        os._exit(TERMINATED)

    def close(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if self._catching:  # None: the handler before was not set from Python
            signal.signal(signal.SIGTERM, self._previous_term if self._previous_term is not None else signal.SIG_DFL)
            self._catching = False
        if self._tb is not None:
            self._tb.close()
        if self._events is not None:
            self._events.close()
            self._events = None
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)

    def _writer(self):
        # TensorBoard is imported on first use: `check` and the GUI never need it.
        if self.enabled and self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        return self._tb


def _make_logger(log_file: Path | None) -> logging.Logger:
    logger = logging.getLogger(f"danlu.run.{id(log_file)}.{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.NullHandler()]
    if log_file is not None:  # only the main process prints and logs
        handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(log_file, encoding="utf-8")]
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger

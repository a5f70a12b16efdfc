"""The run directory: the only channel between a training process and whoever watches it (docs/architecture.md).

events.jsonl gets one JSON object a line, flushed per event; train.log the human-readable log;
tb/ TensorBoard scalars and images. Only the main process writes (`enabled`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

STOP_FILE = "STOP"


def new_run_dir(output_dir: Path, kind: str = "runs") -> Path:
    """output_dir/<kind>/<YYYYmmdd-HHMMSS> (kind: runs, or sweeps), with a suffix when two start in the same
    second."""
    base = output_dir / kind / time.strftime("%Y%m%d-%H%M%S")
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


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
        if enabled:
            self._events = open(run_dir / "events.jsonl", "a", encoding="utf-8")

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
        writer = self._writer()
        if writer is not None:
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """image: HxWx3 uint8."""
        writer = self._writer()
        if writer is not None:
            writer.add_image(tag, image, step, dataformats="HWC")
            writer.flush()

    def stop_requested(self) -> bool:
        return (self.run_dir / STOP_FILE).exists()

    def close(self) -> None:
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

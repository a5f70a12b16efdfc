"""The worker: one long-lived `python -m trainer worker` child that answers the questions needing torch (the LR
curve from the real scheduler, what this machine can do), so the GUI process never imports it.

    worker = Worker(log)        # DANLU_HOME/worker.log gets its messages
    worker.start()              # in the background: torch loads there while the page starts
    worker.lr_curve(config, total_steps, family)   # milliseconds once warm
    worker.gpu_facts(), worker.gpu_memory_gib(), worker.machine_problems(config, cuda)

A question waits for the worker to be ready (the first one after a start, for torch to load). A refusal comes
back as the UserError/ConfigError the worker raised; a worker that fails, ends or does not answer in time gives
WorkerFailed, and the next question starts a new one. The protocol is in trainer/checks/service.py.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainer.common.errors import UserError
from trainer.families.detect import UnreadableFile
from trainer.run.child import error_from_json, problem_from_json, start_piped

if TYPE_CHECKING:
    from trainer.common.errors import Problem
    from trainer.config import TrainConfig

ANSWER_TIMEOUT_S = 300.0  # the first answer includes loading torch, which takes minutes on a slow disk
NOT_ASKED = -1.0  # a cached answer not asked for yet


class WorkerFailed(UserError):
    """The worker could not answer: it failed on the question, ended, or took too long."""


class Worker:
    """One worker child at a time, started on first need (or by start()) and again after it ended. Questions
    from several threads are asked one after another."""

    def __init__(self, log: Path | None = None, timeout_s: float = ANSWER_TIMEOUT_S):
        self.log, self.timeout_s = log, timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._gpu: tuple[bool, bool] | None = None
        self._gpu_memory: float | None = NOT_ASKED
        self._gpus: list[dict[str, Any]] | None = None

    def start(self) -> None:
        """Start the worker unless it runs; returns at once."""
        with self._lock:
            self._ensure_started()

    def close(self) -> None:
        """End the worker (it ends by itself when its input closes)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the questions -----------------------------------------------------------------------------------

    def gpu_facts(self) -> tuple[bool, bool]:
        """trainer.checks.advice.gpu_facts(): (CUDA available, bf16 supported natively), asked once."""
        if self._gpu is None:
            cuda, bf16_supported = self.ask("gpu_facts")
            self._gpu = bool(cuda), bool(bf16_supported)
        return self._gpu

    def gpu_memory_gib(self) -> float | None:
        """trainer.checks.advice.gpu_memory_gib(): the GPU's total memory, None without CUDA; asked once."""
        if self._gpu_memory == NOT_ASKED:
            self._gpu_memory = self.ask("gpu_memory_gib")
        return self._gpu_memory

    def gpu_list(self) -> list[dict[str, Any]]:
        """trainer.checks.advice.gpu_list(): this machine's GPUs, asked once."""
        if self._gpus is None:
            self._gpus = self.ask("gpu_list")
        return self._gpus

    def lr_curve(self, config: TrainConfig, total_steps: int,
                 family: str | None = None) -> dict[str, list[tuple[int, float]]]:
        """trainer.checks.lr_curve.lr_curve: the real scheduler's LR per group over the planned steps."""
        curves = self.ask("lr_curve", config=config.model_dump(mode="json"), total_steps=total_steps,
                          family=family)
        return {group: [(int(step), float(lr)) for step, lr in points] for group, points in curves.items()}

    def machine_problems(self, config: TrainConfig, cuda: bool) -> list[Problem]:
        """trainer.checks.preflight.machine_problems, for run_preflight's `machine`."""
        return [problem_from_json(item) for item in self.ask("machine_problems",
                                                              config=config.model_dump(mode="json"), cuda=cuda)]

    def pickle_names(self, path: Path, zipped: bool) -> dict[str, list[int]]:
        """trainer.families.detect.read_pickle_names (a .ckpt/.pt file needs torch to be read); a worker that cannot
        answer makes the file unreadable for now, as a live view may say, rather than an error of the page."""
        try:
            answer = self.ask("pickle_names", path=str(path), zipped=zipped)
        except WorkerFailed as exc:
            raise UnreadableFile(f"not readable now: {exc.message}") from None
        if "unreadable" in answer:
            raise UnreadableFile(answer["unreadable"])
        return answer["names"]

    def ask(self, op: str, **args: Any) -> Any:
        """One question (trainer/checks/service.py OPS) and its result."""
        with self._lock:
            process = self._ensure_started()
            try:
                process.stdin.write(json.dumps({"op": op, "args": args}, ensure_ascii=False) + "\n")
                process.stdin.flush()
                line = self._answers.get(timeout=self.timeout_s)
            except (OSError, ValueError):  # it had ended: a broken or closed pipe
                line = None
            except queue.Empty:
                self._stop()
                raise WorkerFailed(f"the worker did not answer within {self.timeout_s:g} s ({op})",
                                   self._log_hint()) from None
            if line is None:
                self._stop()
                raise WorkerFailed(f"the worker process ended ({op})", self._log_hint())
            answer = json.loads(line)
            if answer.get("ending"):  # it put something on the GPU and ends now (trainer/checks/service.py)
                self._stop()
        if "errors" in answer:
            raise error_from_json(answer["errors"])
        if "failed" in answer:
            raise WorkerFailed(f"{op} failed in the worker: {answer['failed']}", self._log_hint())
        return answer["result"]

    # --- the process -------------------------------------------------------------------------------------

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        log = _open_log(self.log)
        try:
            self._process = start_piped(["worker"], stderr=log)
        except OSError as exc:
            raise WorkerFailed(f"the worker could not start: {exc}") from None
        finally:
            if log is not None:
                log.close()  # the child has its own handle
        self._answers = queue.Queue()
        threading.Thread(target=_read_lines, args=(self._process.stdout, self._answers), daemon=True,
                         name="danlu-worker-answers").start()
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        with contextlib.suppress(OSError):  # a question it did not read: nothing to flush it to
            process.stdin.close()  # its stdout: closed by the thread reading it, at its end

    def _log_hint(self) -> str:
        return f"its messages are in {self.log}" if self.log else "its messages are on the terminal"


def _open_log(path: Path | None) -> IO[bytes] | None:
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")  # a new worker, a new log


def _read_lines(stream: IO[str], answers: queue.Queue[str | None]) -> None:
    """The worker's answers as they come; None once it ended."""
    with stream:
        for line in stream:
            answers.put(line)
    answers.put(None)

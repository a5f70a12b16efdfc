"""The checks whose answers need torch, served by `python -m trainer worker` to the torch-free GUI: one JSON line
in, one JSON line out, in order (the client is trainer/run/worker.py).

    {"op": "lr_curve", "args": {"config": {...}, "total_steps": 400, "family": "sdxl"}}
    -> {"result": {"unet": [[1, 0.0001], ...]}}
    -> {"errors": [{"keys": [...], "message": ..., ...}]}   a refusal (trainer/run/child.py error_record)
    -> {"failed": "TypeError: ..."}                         anything else (its traceback goes to stderr)

Torch and the scheduler code load once, when the worker starts, so each answer takes milliseconds. A question
that put a tensor on the GPU (the nf4 probe) ends the worker after its answer: a CUDA context keeps hundreds of
MB of VRAM that a training started later would lack. That answer says {"ending": true}, and the client starts
a fresh worker for the next question.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from trainer.checks.advice import gpu_facts, gpu_list, gpu_memory_gib
from trainer.checks.lr_curve import lr_curve
from trainer.checks.preflight import machine_problems
from trainer.common.errors import UserError
from trainer.common.exit_codes import EXIT_OK
from trainer.config.io import validate_config
from trainer.families.detect import UnreadableFile, read_pickle_names
from trainer.run.child import error_record, problem_json

NICENESS = 10  # added to the worker's: its answers take milliseconds, its start seconds of CPU


def _gpu_facts() -> list[bool]:
    return list(gpu_facts())


def _lr_curve(config: dict[str, Any], total_steps: int, family: str | None = None) -> dict[str, list]:
    return lr_curve(validate_config(config), total_steps, family=family)


def _machine_problems(config: dict[str, Any], cuda: bool) -> list[dict[str, Any]]:
    return [problem_json(problem) for problem in machine_problems(validate_config(config), cuda)]


def _pickle_names(path: str, zipped: bool) -> dict[str, Any]:
    """detect.read_pickle_names: {"names": ...}, or {"unreadable": why} for a file that is no safe checkpoint."""
    try:
        return {"names": read_pickle_names(Path(path), zipped)}
    except UnreadableFile as exc:
        return {"unreadable": str(exc)}


OPS: dict[str, Callable[..., Any]] = {"gpu_facts": _gpu_facts, "gpu_memory_gib": gpu_memory_gib, "gpu_list": gpu_list,
                                      "lr_curve": _lr_curve, "machine_problems": _machine_problems,
                                      "pickle_names": _pickle_names}


def answer(line: str) -> dict[str, Any]:
    """The answer to one request line."""
    try:
        request = json.loads(line)
        result = OPS[request["op"]](**request.get("args", {}))
    except UserError as exc:
        return error_record(exc)
    except Exception as exc:  # noqa: BLE001 - any failure is answered; the worker serves on
        traceback.print_exc()
        return {"failed": f"{type(exc).__name__}: {exc}"}
    return {"result": result}


def serve(requests: IO[str], answers: IO[str]) -> int:
    """Answer each line of `requests` on `answers` until requests end (the GUI closed them or ended)."""
    from trainer.training import optim, quantize  # noqa: F401 - torch and transformers' schedulers, now

    try:
        for line in requests:
            reply = answer(line)
            ending = _holds_gpu()
            answers.write(json.dumps({**reply, "ending": True} if ending else reply, ensure_ascii=False) + "\n")
            answers.flush()
            if ending:
                break
    except KeyboardInterrupt:  # Ctrl+C in the GUI's terminal reaches its whole process group
        pass
    return EXIT_OK


def serve_stdio() -> int:
    """serve() on stdin and stdout, with everything else that writes to stdout (a library's print, C code)
    sent to stderr: the answers' channel carries nothing but answers. At a lower CPU priority: loading torch here
    while the GUI starts does not slow the page down."""
    if hasattr(os, "nice"):  # POSIX
        os.nice(NICENESS)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return serve(sys.stdin, answers)


def _holds_gpu() -> bool:
    """Something was placed on the GPU: this process now holds a CUDA context."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized() and torch.cuda.memory_reserved() > 0

"""One training in this process, as `train`, `demo` and the LR finder's probe run it: a run folder, the loop, and
an exit status with a one-line message for a crash (its details stay in the run's train.log)."""

from __future__ import annotations

import sys
from pathlib import Path

from trainer.common.errors import UserError
from trainer.common.exit_codes import EXIT_FAILED, EXIT_OK
from trainer.common.libraries import hide_unused, quiet_libraries
from trainer.config import TrainConfig
from trainer.config.schema.steps import QUANTIZE_PACKAGES
from trainer.run.events import new_run_dir


def run_training(config: TrainConfig, run_dir: Path | None) -> int:
    from trainer.training.loop import train

    quiet_libraries()
    run_dir = run_dir or new_run_dir(Path(config.output_dir).expanduser())
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {run_dir}")
    try:
        status = train(config, run_dir)
    except UserError:
        raise
    except Exception as exc:  # a crash is logged in the run folder; the user gets one line
        print(f"error: training failed: {type(exc).__name__}: {exc} (details in {run_dir / 'train.log'})",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if status in ("completed", "stopped") else EXIT_FAILED


def load_only_what_is_used(config: TrainConfig) -> None:
    """Before the models load: hide the optional packages this config does not use (common.libraries.hide_unused).
    The optimizer's and the base-model quantization's top-level packages are the ones a run imports itself."""
    spec = config.optimizer_spec
    optimizer = spec.path if spec else config.optimizer_type
    hide_unused({optimizer.split(".")[0], QUANTIZE_PACKAGES.get(config.quantize_base, "")})

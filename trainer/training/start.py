"""One training in this process, as `train`, `demo` and the LR finder's probe run it: a run folder, the loop, and
an exit status with a one-line message for a crash (its details stay in the run's train.log)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainer.common.errors import UserError
from trainer.common.exit_codes import EXIT_FAILED, EXIT_OK
from trainer.common.libraries import hide_unused, quiet_libraries
from trainer.config import TrainConfig
from trainer.config.schema.steps import QUANTIZE_PACKAGES
from trainer.run.events import new_run_dir
from trainer.run.launch import LAUNCHED_ENV, launch, launched
from trainer.run.lock import OutputLock
from trainer.training.checkpoints import leftovers, remove_output


def run_training(config: TrainConfig, run_dir: Path | None) -> int:
    """Holds output_dir's lock while it trains (trainer/run/lock.py): a second training there is refused. What a
    killed run of this config left there (checkpoints.leftovers) is removed first, now that none writes it. With
    num_processes > 1 this process launches the training processes (trainer/run/launch.py) and waits for them."""
    output_dir = Path(config.output_dir).expanduser()
    # Several processes: their launcher holds the lock; of several machines the main one (the others write nothing).
    take = LAUNCHED_ENV not in os.environ and config.machine_rank == 0
    with OutputLock(output_dir, take) as lock:
        if lock.held:
            for path in leftovers(config):
                remove_output(path)
                print(f"removed {path} (left by a run killed while saving)")
        run_dir = run_dir or new_run_dir(output_dir)
        lock.record_run(run_dir)
        if config.distributed and not launched():
            return launch(config, run_dir)
        return _train_in(config, run_dir)


def _train_in(config: TrainConfig, run_dir: Path) -> int:
    from trainer.training.loop import train

    quiet_libraries()
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

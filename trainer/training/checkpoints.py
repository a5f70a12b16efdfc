"""Names of the files a run writes (sd-scripts' scheme), pruning of old ones, and resumable training state.

  <name>.safetensors              final LoRA            <name>-state/            state at the end
  <name>-000004.safetensors       every n epochs        <name>-000004-state/     with save_state
  <name>-step00000500.safetensors every n steps         <name>-step00000500-state/
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.common.errors import UserError
from trainer.config import TrainConfig

if TYPE_CHECKING:  # for annotations only: the file names are torch-free, the GUI's overwrite check uses them
    from accelerate import Accelerator

TRAIN_STATE_FILE = "train_state.json"


def final_file(config: TrainConfig) -> Path:
    return Path(config.output_dir).expanduser() / f"{config.output_name}.{config.save_model_as}"


def epoch_file(config: TrainConfig, epoch: int) -> Path:
    return final_file(config).with_name(f"{config.output_name}-{epoch:06d}.{config.save_model_as}")


def step_file(config: TrainConfig, step: int) -> Path:
    return final_file(config).with_name(f"{config.output_name}-step{step:08d}.{config.save_model_as}")


def state_dir(lora_file: Path) -> Path:
    return lora_file.with_name(lora_file.name.rsplit(".", 1)[0] + "-state")


def planned_outputs(config: TrainConfig, epochs: int, total_steps: int) -> list[Path]:
    """Every file and state folder the run will write, for the overwrite check before it starts."""
    files = [final_file(config)]
    if config.save_every_n_epochs:
        files += [epoch_file(config, e) for e in range(config.save_every_n_epochs, epochs, config.save_every_n_epochs)]
    if config.save_every_n_steps:
        files += [step_file(config, s) for s in range(config.save_every_n_steps, total_steps,
                                                       config.save_every_n_steps)]
    states = [state_dir(f) for f in files[1:]] if config.save_state else []
    if config.save_state_on_train_end:
        states.append(state_dir(files[0]))
    return files + states


def outdated_epoch(config: TrainConfig, epoch: int, keep: int | None) -> int | None:
    """The epoch whose save falls out of the last `keep` epoch saves once `epoch` is saved (sd-scripts)."""
    if not keep or not config.save_every_n_epochs:
        return None
    old = epoch - config.save_every_n_epochs * keep
    return old if old > 0 else None


def outdated_step(config: TrainConfig, step: int, keep: int | None) -> int | None:
    """The step save older than `keep` steps once `step` is saved (sd-scripts' arithmetic)."""
    if not keep or not config.save_every_n_steps:
        return None
    old = step - keep - 1
    old -= old % config.save_every_n_steps
    return old if old > 0 else None


def remove_output(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def keep_only_lora_weights(models, weights, output_dir) -> None:
    """accelerate save hook: the state keeps the LoRA weights, not the frozen base model (gigabytes)."""
    for index, state in enumerate(weights):
        weights[index] = {key: value for key, value in state.items() if "lora_" in key}


def save_train_state(accelerator: Accelerator, folder: Path, step: int, epoch: int) -> None:
    """accelerate's state (LoRA weights, optimizer, scaler, RNG of every process) plus the position."""
    tmp = folder.with_name(folder.name + ".partial")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAIN_STATE_FILE).write_text(json.dumps({"current_step": step, "current_epoch": epoch}))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)  # a half-written state is never under the final name
    accelerator.wait_for_everyone()


def load_train_state(accelerator: Accelerator, folder: Path) -> tuple[int, int]:
    """Restore a state saved by save_train_state; returns (step, epoch) it was saved at."""
    position = folder / TRAIN_STATE_FILE
    if not position.is_file():
        raise UserError(f"resume: '{folder}' is not a Danlu/sd-scripts state folder ({TRAIN_STATE_FILE} missing)",
                        "pick a folder named like <output_name>-000004-state")
    accelerator.load_state(str(folder), strict=False)
    saved = json.loads(position.read_text())
    return int(saved["current_step"]), int(saved["current_epoch"])


class Saver:
    """When to write LoRA files and states, and which older ones to delete, as sd-scripts does.

    write_lora(path, epoch) writes one LoRA file; the Saver decides the paths and the cadence.
    """

    def __init__(self, config: TrainConfig, accelerator: Accelerator, write_lora: Callable[[Path, int], None]):
        self.config = config
        self.accelerator = accelerator
        self.write_lora = write_lora

    def after_step(self, step: int, epoch: int, epoch_ends: bool, last_step: bool) -> None:
        """The last step's file is the final one, so no step or epoch file is written for it."""
        config = self.config
        if last_step:
            return
        if config.save_every_n_steps and step % config.save_every_n_steps == 0:
            self._checkpoint(step_file(config, step), step, epoch)
            self._remove(outdated_step(config, step, config.save_last_n_steps), step_file, state=False)
            self._remove(outdated_step(config, step, config.save_last_n_steps_state), step_file, state=True)
        if epoch_ends and config.save_every_n_epochs and epoch % config.save_every_n_epochs == 0:
            self._checkpoint(epoch_file(config, epoch), step, epoch)
            self._remove(outdated_epoch(config, epoch, config.save_last_n_epochs), epoch_file, state=False)
            self._remove(outdated_epoch(config, epoch, config.save_last_n_epochs_state), epoch_file, state=True)

    def final(self, step: int, epoch: int) -> None:
        self.write_lora(final_file(self.config), epoch)
        if self.config.save_state_on_train_end:
            save_train_state(self.accelerator, state_dir(final_file(self.config)), step, epoch)

    def _checkpoint(self, path: Path, step: int, epoch: int) -> None:
        self.write_lora(path, epoch)
        if self.config.save_state:
            save_train_state(self.accelerator, state_dir(path), step, epoch)

    def _remove(self, number: int | None, name_of: Callable[[TrainConfig, int], Path], state: bool) -> None:
        if number is None or not self.accelerator.is_main_process:
            return
        path = name_of(self.config, number)
        remove_output(state_dir(path) if state else path)

"""Names of the files a run writes (sd-scripts' scheme), pruning of old ones, and resumable training state.

  <name>.safetensors              final LoRA            <name>-state/            state at the end (save_state or
                                                                                   save_state_on_train_end)
  <name>-000004.safetensors       every n epochs        <name>-000004-state/     with save_state
  <name>-step00000500.safetensors every n steps         <name>-step00000500-state/
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.common.errors import Problem, UserError
from trainer.config import TrainConfig

if TYPE_CHECKING:  # for annotations only: the file names are torch-free, the GUI's overwrite check uses them
    from accelerate import Accelerator

TRAIN_STATE_FILE = "train_state.json"
_STATE_HINT = "resume from another state folder (an earlier one), or train without resume"
_STATE_HINT_ZH = "请从另一个（更早的）状态文件夹继续，或不用 resume 重新训练"
_SAVE_SUFFIX = r"(-\d{6}|-step\d{8})?"  # what epoch_file and step_file add to output_name


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
    if ends_with_state(config):
        states.append(state_dir(files[0]))
    return files + states


def ends_with_state(config: TrainConfig) -> bool:
    """sd-scripts saves <name>-state at the end with save_state or save_state_on_train_end."""
    return config.save_state or config.save_state_on_train_end


def leftovers(config: TrainConfig) -> list[Path]:
    """What a run of this config killed during a save left in output_dir: LoRA files' temporary files
    (common.files.atomic_write) and `-state.partial` folders. The next training removes them (start.py); `check`
    names them."""
    name, suffix = re.escape(config.output_name), re.escape(config.save_model_as)
    pattern = re.compile(rf"\.{name}{_SAVE_SUFFIX}\.{suffix}\.\d+-\d+\.partial|{name}{_SAVE_SUFFIX}-state\.partial")
    try:
        entries = list(final_file(config).parent.iterdir())
    except OSError:  # no output_dir yet
        return []
    return sorted(path for path in entries if pattern.fullmatch(path.name))


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


def state_problems(folder: Path) -> list[Problem]:
    """What keeps a resume state folder from loading, read without torch: the position file missing or broken,
    a tensor file cut short, a torch file whose zip is incomplete. Pickled code shows only when loading refuses it
    (load_train_state)."""
    from trainer.families.detect import file_damage

    try:
        _position(folder)
    except UserError as exc:
        return exc.problems
    for path in sorted(folder.iterdir()):
        damage = file_damage(path) if path.suffix == ".safetensors" else \
            "not a complete torch file (cut short?)" if path.suffix == ".bin" and not zipfile.is_zipfile(path) else None
        if damage:
            return [Problem(("resume",), f"'{path}' is {damage}", _STATE_HINT, zh=f"'{path}' 已损坏：{damage}",
                            hint_zh=_STATE_HINT_ZH)]
    return []


def _position(folder: Path) -> tuple[int, int]:
    """(step, epoch) from the state's TRAIN_STATE_FILE, or a UserError of resume saying what is wrong with it."""
    position = folder / TRAIN_STATE_FILE
    if not position.is_file():
        raise UserError(f"'{folder}' is not a Danlu/sd-scripts state folder ({TRAIN_STATE_FILE} missing)",
                        "pick a folder named like <output_name>-000004-state", "resume",
                        zh=f"'{folder}' 不是丹炉或 sd-scripts 的状态文件夹（缺少 {TRAIN_STATE_FILE}）",
                        hint_zh="请选名为 <output_name>-000004-state 这样的文件夹")
    try:
        saved = json.loads(position.read_text(encoding="utf-8"))
        return int(saved["current_step"]), int(saved["current_epoch"])
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: broken JSON, text or numbers
        raise UserError(f"'{position}' is damaged (not JSON with current_step and current_epoch)", _STATE_HINT,
                        "resume", zh=f"'{position}' 已损坏（不是含 current_step 和 current_epoch 的 JSON）",
                        hint_zh=_STATE_HINT_ZH) from None


def load_train_state(accelerator: Accelerator, folder: Path) -> tuple[int, int]:
    """Restore a state saved by save_train_state; returns (step, epoch) it was saved at."""
    import pickle

    from safetensors import SafetensorError

    position = _position(folder)
    try:
        accelerator.load_state(str(folder), strict=False)
    except pickle.UnpicklingError:  # torch's weights_only refused a pickled class or function: never run it
        raise UserError(f"'{folder}' holds pickled code, which Danlu never loads", _STATE_HINT, "resume",
                        zh=f"'{folder}' 里有 pickle 代码，丹炉从不加载这种文件", hint_zh=_STATE_HINT_ZH) from None
    except (SafetensorError, EOFError, RuntimeError, OSError) as exc:
        raise UserError(f"'{folder}' cannot be loaded: {exc}", _STATE_HINT, "resume",
                        zh=f"'{folder}' 无法加载：{exc}", hint_zh=_STATE_HINT_ZH) from None
    return position


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
        if ends_with_state(self.config):
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

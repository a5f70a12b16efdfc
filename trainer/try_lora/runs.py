"""What a run folder gives a try grid by default (torch-free): its base model, its LoRA files with their epochs (the
run's `checkpoint` events), its sample prompts, sampler and seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.common.errors import UserError
from trainer.common.text import read_user_text
from trainer.config.io import read_config_file
from trainer.run.state import RunReader
from trainer.try_lora.grid import LoraChoice, lora_choice

RUN_CONFIG = "config.yaml"


def run_defaults(run_dir: str | Path) -> dict[str, Any]:
    """GridSpec fields from a run folder: base, loras (oldest epoch first, the final file last), prompts, sampler,
    seeds (the run's seed and the next), run."""
    folder = Path(run_dir).expanduser()
    config_file = folder / RUN_CONFIG
    if not config_file.is_file():
        raise UserError(f"--run: '{run_dir}' is not a run folder (it has no {RUN_CONFIG})",
                        "give a folder under output_dir/runs/, as the Run tab shows it",
                        zh=f"--run：'{run_dir}' 不是训练文件夹（没有 {RUN_CONFIG}）",
                        hint_zh="请选 output_dir/runs/ 下的文件夹（运行页显示的那个）")
    config = read_config_file(config_file)
    loras = run_loras(folder)
    if not loras:
        raise UserError(f"--run: '{run_dir}' has saved no LoRA file yet", "wait for its first saved epoch, or "
                        "give LoRA files with --lora", zh=f"--run：'{run_dir}' 还没有保存任何 LoRA 文件",
                        hint_zh="等它保存第一个轮次，或用 --lora 指定文件")
    seed = int(config.get("seed") or 1)
    return {"base": str(config.get("pretrained_model_name_or_path") or ""), "loras": loras,
            "prompts": prompt_lines(config.get("sample_prompts")) or ["a photo"],
            "sampler": config.get("sample_sampler") or "euler_a", "seeds": [seed, seed + 1], "run": str(folder)}


def run_loras(run_dir: Path) -> list[LoraChoice]:
    """The files the run saved (its checkpoint events) that still exist, by epoch; one file per epoch (the last
    saved: the final file when it repeats the last epoch's)."""
    state = RunReader(run_dir).update()
    found: dict[tuple, LoraChoice] = {}
    for checkpoint in sorted(state.checkpoints, key=lambda c: (c.epoch, c.step)):
        if Path(checkpoint.path).is_file():
            choice = lora_choice(checkpoint.path, checkpoint.epoch or None)
            found[(choice.name, choice.epoch)] = choice
    return list(found.values())


def prompt_lines(value: str | list[str] | None) -> list[str]:
    """sample_prompts' lines (a file's, read as users' text files are, or a list), comments and blanks left out."""
    if not value:
        return []
    if isinstance(value, str):
        path = Path(value).expanduser()
        lines = read_user_text(path, "sample_prompts").splitlines() if path.is_file() else []
    else:
        lines = [str(line) for line in value]
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

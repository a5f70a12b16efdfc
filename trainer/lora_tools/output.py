"""Where the tools write: never over an existing file without --overwrite, never over anything Danlu did not write
(trainer/common/places.py), always atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.common.errors import ConfigError, UserError
from trainer.common.files import atomic_write
from trainer.common.places import file_place_problems, model_folder_problems
from trainer.training.export import atomic_save_safetensors, model_hashes

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def check_output(path: Path, overwrite: bool, suffixes: tuple[str, ...] | None = LORA_SUFFIXES) -> Path:
    """A file ending in one of suffixes, or with suffixes None a model folder (`lora merge --format diffusers`)."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"-o: '{path}' must end in {' or '.join(suffixes)}",
        f"e.g. -o {path.with_suffix('.safetensors')}",
                        zh=f"-o：'{path}' 的扩展名必须是 {' 或 '.join(suffixes)}",
                        hint_zh=f"例如 -o {path.with_suffix('.safetensors')}")
    problems = file_place_problems(path, "-o", overwrite) if suffixes else model_folder_problems(path, "-o", overwrite)
    if problems:
        raise ConfigError(problems)
    return path


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Tensors as they are (no dtype change); safetensors get sd-scripts' sshs hashes when they carry metadata."""
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    if path.suffix.lower() != ".safetensors":
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
        return
    metadata = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    if metadata:
        metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = model_hashes(tensors, metadata)
    atomic_save_safetensors(path, tensors, metadata)

"""Where the tools write: never over an existing file without --overwrite, always atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.common.errors import UserError
from trainer.common.files import atomic_write
from trainer.training.export import atomic_save_safetensors, model_hashes

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def check_output(path: Path, overwrite: bool, suffixes: tuple[str, ...] | None = LORA_SUFFIXES) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"-o: '{path}' already exists", "give another name, or add --overwrite to replace it")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"-o: '{path}' must end in {' or '.join(suffixes)}", f"e.g. -o {path.with_suffix('.safetensors')}")
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

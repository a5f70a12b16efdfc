"""Writing LoRA files: precision, format, sd-scripts' model hashes, and atomic replacement (trainer/common/files.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
import torch

from trainer.common.files import atomic_write, atomic_write_bytes

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # Serialised here: safetensors' save_file keeps temp files of its own, which a killed process leaves behind.
    data = safetensors.torch.save(tensors, metadata)
    atomic_write_bytes(path, data)


def model_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """sd-scripts' sshs_model_hash (sha256 of the tensor data) and sshs_legacy_hash (A1111's old hash)."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = safetensors.torch.save(tensors, ss_only)
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len:]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def save_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], save_precision: str) -> None:
    """Save in the format the suffix names: .safetensors with metadata, or .ckpt/.pt (tensors only)."""
    dtype = SAVE_DTYPES[save_precision]
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        metadata = dict(metadata)
        if metadata:  # no_metadata means none at all, as sd-scripts: not even the hashes
            metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = model_hashes(tensors, metadata)
        atomic_save_safetensors(path, tensors, metadata)
    else:
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def load_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a LoRA file safely: safetensors, or a torch pickle restricted to tensors (weights_only)."""
    if path.suffix == ".safetensors":
        with safetensors.safe_open(str(path), "pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    return torch.load(path, map_location="cpu", weights_only=True), {}

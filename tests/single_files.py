"""Test support: write the tiny diffusers folders as the single files users download (A1111/ComfyUI LDM
checkpoints, BFL Flux files, ComfyUI's ae / clip_l / t5xxl) with the product's converters (original_layout.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from trainer.families.original_layout import Tensors, bfl_flux, hf_clip, ldm_checkpoint, ldm_vae
from trainer.families.table import FAMILIES

__all__ = ["bfl_flux", "folder_config", "folder_weights", "ldm_vae", "write_flux_files", "write_ldm_checkpoint"]


def folder_weights(folder: Path, component: str) -> Tensors:
    return load_file(str(next((Path(folder) / component).glob("*.safetensors"))))


def folder_config(folder: Path, component: str) -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((Path(folder) / component / name).read_text(encoding="utf-8"))


def write_ldm_checkpoint(folder: Path, path: Path, family: str) -> Path:
    """A1111-style single file of a tiny diffusers SD1 / SD2 / SDXL folder."""
    names = ["unet", "vae", *(encoder.component for encoder in FAMILIES[family].text_encoders)]
    states = {name: folder_weights(folder, name) for name in names}
    configs = {name: folder_config(folder, name) for name in ("unet", "vae")}
    return _save(ldm_checkpoint(family, states, configs), path)


def write_flux_files(folder: Path, out: Path, prefix: str = "model.diffusion_model.") -> dict[str, Path]:
    """ComfyUI's four Flux files: transformer (BFL, under `prefix`), ae, clip_l, t5xxl."""
    out.mkdir(parents=True, exist_ok=True)
    transformer = {prefix + k: v for k, v in bfl_flux(folder_weights(folder, "transformer")).items()}
    return {
        "model": _save(transformer, out / "flux1.safetensors"),
        "ae": _save(ldm_vae(folder_weights(folder, "vae"), folder_config(folder, "vae")), out / "ae.safetensors"),
        "clip_l": _save(hf_clip(folder_weights(folder, "text_encoder"), ""), out / "clip_l.safetensors"),
        "t5xxl": _save(folder_weights(folder, "text_encoder_2"), out / "t5xxl.safetensors"),
    }


def _save(state: Tensors, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path

"""Say which model family a base model is, and what a single model file is (full checkpoint, UNet, VAE, LoRA,
text encoder, embedding) from its tensor names and a few shapes, reading only the safetensors header, never the
weights. Torch-free (the GUI calls it on every edit) except for .ckpt/.pt files, which only torch can open.

The key conventions are those of the files users download: LDM/kohya checkpoints (`model.diffusion_model.*`,
`cond_stage_model.*`, `conditioner.embedders.*`), BFL Flux files, diffusers/peft exports and kohya/LyCORIS LoRAs.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.families.table import FAMILIES, FAMILY_LABELS

Names = dict[str, list[int]]

# The UNet's cross-attention width is the text encoder's width: the one shape that tells the SD families apart.
CONTEXT_DIM_FAMILY = {dim: family.name for family in FAMILIES.values() for dim in family.context_dims}
LDM_FAMILY_HINTS = [(family.ldm_hint, family.name) for family in FAMILIES.values() if family.ldm_hint]
EMBEDDING_WIDTH_FAMILY = {family.embedding_width: family.name for family in FAMILIES.values()
                          if family.embedding_width}  # SDXL embeddings hold two tensors, clip_l and clip_g
CLIP_WIDTH_NAMES = {768: "CLIP-L", 1024: "OpenCLIP-H", 1280: "OpenCLIP-G (clip_g)"}
MAX_HEADER_BYTES = 100 * 1024 * 1024
FLUX_GUIDANCE = r"guidance_in\.|guidance_embedder\."


@dataclass(frozen=True)
class CheckpointKind:
    kind: str  # "model" | "unet" | "transformer" | "vae" | "text_encoder" | "lora" | "embedding" | "unknown"
    family: str | None  # "sd1" | "sd2" | "sdxl" | "flux" | None
    detail: str  # human text: what the file is, e.g. "kohya LoRA for SD1.x, rank 32"


class UnreadableFile(ValueError):
    """The file is not a safetensors/torch file, or opening it would run pickled code."""


def tensor_names(path: Path) -> Names:
    """Tensor name -> shape, from the safetensors header, or from a torch pickle loaded with weights_only."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        header = _safetensors_header(handle, head, Path(path).stat().st_size)
    if header is not None:
        return {name: list(info["shape"]) for name, info in header.items()
                if name != "__metadata__" and isinstance(info, dict) and "shape" in info}
    # zip: torch.save since 1.6; 0x80: a legacy pickle (protocol >= 2). Anything else is not worth importing torch.
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise UnreadableFile("not a model file (neither safetensors nor a torch checkpoint)")
    return _pickle_reader(Path(path), head.startswith(b"PK"))


def _safetensors_header(handle, head: bytes, size: int) -> dict | None:
    length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
        return None
    try:
        header = json.loads(handle.read(length))
    except ValueError:  # includes UnicodeDecodeError
        return None
    return header if isinstance(header, dict) else None


def cut_short(path: Path) -> str | None:
    """Why a safetensors file is incomplete (a cut download or copy keeps its header: the tensors' data offsets
    say how long the file must be); None for a complete one or another kind of file. Reads the header only."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            header = _safetensors_header(handle, head, size)
    except OSError:  # describe_checkpoint and file_damage say why it cannot be read
        return None
    if header is None:
        return None
    ends = [info["data_offsets"][1] for info in header.values() if isinstance(info, dict)
            and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2]
    needed = 8 + struct.unpack("<Q", head)[0] + max((end for end in ends if isinstance(end, int)), default=0)
    if size >= needed:
        return None
    return (f"cut short: its header describes {needed} bytes and the file holds {size} (an interrupted download "
            "or copy); download or copy it again")


def file_damage(path: Path) -> str | None:
    """Why a model, LoRA or part file cannot be loaded (cut short, pickled code, not a model file); None when it
    reads. Torch pickles are loaded with weights_only."""
    try:
        damage = cut_short(path)
        if damage is None:
            tensor_names(path)
        return damage
    except UnreadableFile as exc:
        return str(exc)
    except OSError as exc:
        return f"not readable ({exc.strerror or exc})"


def read_pickle_names(path: Path, zipped: bool) -> Names:
    """Tensor names of a torch pickle (.ckpt/.pt), loaded with weights_only: no pickled code runs."""
    import pickle

    import torch  # only here: detection of safetensors files must stay fast and torch-free

    try:  # legacy (pre-zip) files cannot be memory-mapped
        with warnings.catch_warnings():  # torch's notes on foreign pickle protocols: the refusal below says it
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        # weights_only names the class or function it refused to import (a GLOBAL); the rest is plain damage
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc):
            raise UnreadableFile("not loadable safely (pickled code)") from None
        raise UnreadableFile("not a model file (damaged, or not a torch checkpoint)") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # LDM / Lightning checkpoints wrap the weights
    return _flatten(data, "", torch.Tensor)


def _flatten(data, prefix: str, tensor_type: type) -> Names:
    if isinstance(data, tensor_type):
        return {prefix: list(data.shape)}
    if not isinstance(data, dict):
        return {}
    names: Names = {}
    for key, value in data.items():
        names.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key), tensor_type))
    return names


def detect_family(source: str) -> str | None:
    """The family of a diffusers folder or a single file; None for a repo id or an unknown model."""
    path = Path(source)
    if path.is_file():
        return describe_checkpoint(path).family
    return _folder_family(path) if path.is_dir() else None


def _folder_family(path: Path) -> str | None:
    """The row whose denoiser folder is there and whose folder_rule holds, else the one of them without a rule."""
    present = [family for family in FAMILIES.values() if (path / family.denoiser / "config.json").is_file()]
    ruled = [family for family in present if family.folder_rule and _rule_holds(path, *family.folder_rule)]
    found = ruled or [family for family in present if not family.folder_rule]
    return found[0].name if found else None


def _rule_holds(path: Path, config: str, key: str, value: str) -> bool:
    file = path / config
    return file.is_file() and json.loads(file.read_text(encoding="utf-8")).get(key) == value


PickleReader = Callable[[Path, bool], Names]  # (path, zip format) -> tensor names; raises UnreadableFile
_pickle_reader: PickleReader = read_pickle_names


def read_pickles_with(reader: PickleReader) -> None:
    """Who opens torch pickles for tensor_names: this process (the default), or for the GUI, which never imports
    torch, its worker process (trainer/run/worker.py)."""
    global _pickle_reader
    _pickle_reader = reader


def describe_checkpoint(path: Path) -> CheckpointKind:
    try:
        names = tensor_names(path)
    except UnreadableFile as exc:
        return CheckpointKind("unknown", None, str(exc))
    except OSError as exc:
        return CheckpointKind("unknown", None, f"not readable ({exc.strerror or exc})")
    for pattern, classify in _RULES:
        if any(pattern.search(name) for name in names):
            return classify(names)
    sample = next(iter(names), None)
    return CheckpointKind("unknown", None, f"not a recognised model file ({len(names)} tensor(s)"
                          + (f", e.g. '{sample}')" if sample else ")"))


def _first(names: Names, pattern: str) -> list[int] | None:
    regex = re.compile(pattern)
    return next((shape for name, shape in names.items() if regex.search(name)), None)


def _any(names: Names, pattern: str) -> bool:
    return _first(names, pattern) is not None


def _hint(names: Names, table: list[tuple[str, str]]) -> str | None:
    return next((value for pattern, value in table if _any(names, pattern)), None)


def _context_family(names: Names) -> str | None:
    """Family from the UNet's attn2.to_k input width, in full models, UNet files and LoRAs alike."""
    shape = _first(names, r"attn2[._]to_k(\.weight|\.lora_down\.weight|\.lora_A\.weight|\.lora\.down\.weight"
                          r"|\.hada_w1_b)$")
    return CONTEXT_DIM_FAMILY.get(shape[-1]) if shape and len(shape) >= 2 else None


def ldm_variant(names: Names) -> str:
    """"base" | "refiner" | "inpainting" for an original-layout SD checkpoint."""
    family = _hint(names, LDM_FAMILY_HINTS) or _context_family(names)
    # the refiner conditions on OpenCLIP-G alone (embedders.0, context width 1280); LoRAs target the base
    refiner = _any(names, r"^conditioner\.embedders\.0\.model\.") or (
        family == "sdxl" and (_first(names, r"attn2\.to_k\.weight$") or [0])[-1] == 1280)
    in_shape = _first(names, r"^model\.diffusion_model\.input_blocks\.0\.0\.weight$") or [0, 0]
    return "refiner" if refiner else "inpainting" if in_shape[1:2] == [9] else "base"


def flux_variant(names: Names) -> str:
    """"dev" (guidance-distilled: has guidance_in) | "schnell"."""
    return "dev" if _any(names, FLUX_GUIDANCE) else "schnell"


def _ldm(names: Names) -> CheckpointKind:
    """Original-layout (A1111/ComfyUI) checkpoints and their UNet-only extracts."""
    family = _hint(names, LDM_FAMILY_HINTS) or _context_family(names)
    variant = ldm_variant(names)
    refiner = variant == "refiner"
    label = f"{FAMILY_LABELS.get(family, 'Stable Diffusion')} {variant}"
    if _any(names, r"^(cond_stage_model|conditioner)\.") and _any(names, r"^first_stage_model\."):
        encoders = "OpenCLIP-G" if refiner else _text_encoders(family)
        detail = f"{label} checkpoint (UNet, VAE, {encoders})" + (", not a base model" if refiner else "")
        return CheckpointKind("model", family, detail)
    return CheckpointKind("unet", family, f"{label} UNet")


def _text_encoders(family: str | None) -> str:
    models = [encoder.model for encoder in FAMILIES[family].text_encoders] if family else ["text encoder"]
    return " and ".join(models)


def _diffusers_unet(names: Names) -> CheckpointKind:
    family = "sdxl" if _any(names, r"^add_embedding\.") else _context_family(names)
    return CheckpointKind("unet", family, f"{FAMILY_LABELS.get(family, 'Stable Diffusion')} UNet in diffusers layout")


def _flux(names: Names) -> CheckpointKind:
    variant = "dev: has guidance_in" if flux_variant(names) == "dev" else "schnell: no guidance_in"
    if _any(names, r"^(vae|first_stage_model|text_encoders)\."):
        return CheckpointKind("model", "flux", f"Flux.1 all-in-one checkpoint ({variant})")
    layout = " in diffusers layout" if _any(names, r"^single_transformer_blocks\.") else ""
    return CheckpointKind("transformer", "flux", f"Flux.1 transformer{layout} ({variant})")


def _vae(names: Names) -> CheckpointKind:
    channels = ((_first(names, r"(^|\.)decoder\.conv_in\.weight$") or []) + [0, 0])[1]
    if channels == 16:
        return CheckpointKind("vae", "flux", "Flux.1 VAE (ae, 16 latent channels)")
    return CheckpointKind("vae", None, f"Stable Diffusion VAE ({channels} latent channels, as SD1.x/2.x/SDXL use)")


def _clip(names: Names) -> CheckpointKind:
    width = (_first(names, r"^(text_model\.)?final_layer_norm\.weight$") or [0])[0]
    name = CLIP_WIDTH_NAMES.get(width, f"CLIP (width {width})")
    return CheckpointKind("text_encoder", None, f"{name} text encoder")


def _t5(names: Names) -> CheckpointKind:
    width = (_first(names, r"^encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight$") or [0, 0])[-1]
    return CheckpointKind("text_encoder", None, "T5-XXL text encoder" if width == 4096 else
                          f"T5 text encoder (width {width})")


def _embedding(names: Names) -> CheckpointKind:
    width = (_first(names, r"^(emb_params|string_to_param\..*)$") or [0])[-1]
    family = "sdxl" if "clip_g" in names else EMBEDDING_WIDTH_FAMILY.get(width)
    vectors = (_first(names, r"^(emb_params|clip_l|string_to_param\..*)$") or [0])[0]
    target = f" for {FAMILY_LABELS[family]}" if family else ""
    return CheckpointKind("embedding", family, f"textual-inversion embedding{target}, {vectors} vectors")


# LoRA formats, first match wins; LyCORIS algorithms first since they share kohya's lora_unet_ prefixes.
LORA_FORMATS = [
    (r"\.hada_w1_a$", "LyCORIS LoHa", r"\.hada_w1_b$"),
    (r"\.lokr_w1(_a)?$", "LyCORIS LoKr", r"\.lokr_w2_b$"),  # full-matrix LoKr has no rank
    (r"^lora_(unet|te\d?)_.*\.lora_down\.weight$", "kohya LoRA", r"\.lora_down\.weight$"),
    (r"\.lora_A(\.default)?\.weight$", "PEFT/diffusers LoRA", r"\.lora_A(\.default)?\.weight$"),
    (r"[._]lora\.down\.weight$", "diffusers LoRA (old format)", r"[._]lora\.down\.weight$"),
    (r"\.lora_down\.weight$", "LoRA", r"\.lora_down\.weight$"),
]
LORA_FAMILY_HINTS = [  # module names only one family has, before falling back to the cross-attention width
    (family.lora_hint, family.name) for family in reversed(FAMILIES.values()) if family.lora_hint]


def _lora(names: Names) -> CheckpointKind:
    name, down = next((name, down) for detect, name, down in LORA_FORMATS if _any(names, detect))
    family = _hint(names, LORA_FAMILY_HINTS) or _context_family(names)
    down_shapes = [shape for key, shape in names.items() if re.search(down, key)]
    if name == "kohya LoRA" and any(len(s) == 4 and s[2] * s[3] > 1 for s in down_shapes):
        name = "kohya LoCon"  # 3x3 conv layers (conv_dim) trained too
    ranks = sorted({shape[0] for shape in down_shapes if shape})
    detail = name + (f" for {FAMILY_LABELS[family]}" if family else "")
    if ranks:
        detail += f", rank {ranks[0]}" if len(ranks) == 1 else f", ranks {ranks[0]}-{ranks[-1]}"
    return CheckpointKind("lora", family, detail)


_RULE_TABLE: list[tuple[str, Callable[[Names], CheckpointKind]]] = [
    ("|".join(detect for detect, _, _ in LORA_FORMATS), _lora),
    (r"^(emb_params|clip_l|clip_g|string_to_param\..*)$", _embedding),
    (r"^(model\.diffusion_model\.)?double_blocks\.\d+\.img_attn\.|^single_transformer_blocks\.", _flux),
    (r"^(conditioner\.embedders\.|model\.diffusion_model\.(input_blocks|label_emb)\.)", _ldm),
    (r"^down_blocks\.\d+\.", _diffusers_unet),
    (r"^model\.diffusion_model\.", lambda names: CheckpointKind(  # SD3, Hunyuan, ...: not mistaken for a VAE below
        "unknown", None, "a checkpoint of an unrecognised model family (not SD1.x/2.x, SDXL or Flux.1)")),
    (r"^(first_stage_model\.|vae\.)?decoder\.conv_in\.weight$", _vae),
    (r"^(text_model\.)?encoder\.layers\.\d+\.self_attn\.", _clip),  # transformers 5 drops "text_model."
    (r"^encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight$", _t5),
]
_RULES = [(re.compile(pattern), classify) for pattern, classify in _RULE_TABLE]

# What to tell a user who gave the file as the base model, by kind.
_FOLDER = ("pick the full checkpoint (.safetensors) or the diffusers folder (with unet/, vae/, text_encoder/, "
           "tokenizer/, scheduler/) of the base model")
BASE_MODEL_ADVICE = {
    "model": "is a single-file {detail}",
    **dict.fromkeys(("unet", "transformer", "vae", "text_encoder"), "is {a} {detail} alone, not a full model: "
                    + _FOLDER),
    "lora": "is {a} {detail}, not a base model: pick the base model you trained it on (to continue training "
            "this LoRA, give it as network_weights)",
    "embedding": "is {a} {detail}, not a base model: pick the base model it was made for",
    "unknown": "is {detail}: " + _FOLDER,
}


def base_model_advice(path: Path) -> str:
    """The rest of the sentence "'<file>' ..." for a single file given as pretrained_model_name_or_path."""
    folder = Path(path).parent.parent
    if (folder / "model_index.json").is_file():
        return f"is one part of the diffusers model folder '{folder}': pick that folder"
    found = describe_checkpoint(path)
    article = "an" if found.detail[:1] in tuple("AEIOU") or found.detail.startswith("SD") else "a"
    return BASE_MODEL_ADVICE[found.kind].format(a=article, detail=found.detail)

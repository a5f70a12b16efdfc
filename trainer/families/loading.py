"""Load every component of a base model from what users actually have: a diffusers folder or Hugging Face repo
id, or single files (an A1111/ComfyUI checkpoint; Flux's transformer, ae, clip_l and t5xxl files; a separate VAE).

Single files are read with safetensors, or torch.load(weights_only=True) for .ckpt/.pt (no pickled code runs), and
converted with diffusers' LDM converters (UNet, VAE, OpenCLIP) or the BFL Flux map (single_file.py). Architectures come from
the configs shipped in configs/ (or the user's base_model_config), so nothing is downloaded but the tokenizers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.common.errors import UserError
from trainer.families import detect
from trainer.families.single_file import article, component_class, first_line, load_file_component
from trainer.families.table import FAMILIES

SHIPPED_CONFIGS = Path(__file__).parent / "configs"
# Components that may come from their own file (the family's separate_files): the ModelSources field naming it.
SOURCE_FIELDS = {"vae": "vae", "text_encoder": "clip_l", "text_encoder_2": "t5xxl"}
SCHEDULERS = {"ddpm": "DDPMScheduler", "flow_match": "FlowMatchEulerDiscreteScheduler"}  # the table's scheduler
MIN_VOCABULARY = 16  # an "empty" CLIP tokenizer has 2 tokens; even the tiny test vocabularies have 190+


@dataclass
class ModelSources:
    model: str  # pretrained_model_name_or_path: diffusers folder, HF repo id, or a single file
    vae: str | None = None  # a separate VAE file or diffusers folder (sd-scripts `vae`); for Flux the `ae` file
    clip_l: str | None = None  # Flux split files (sd-scripts keys clip_l, t5xxl, ae)
    t5xxl: str | None = None
    base_model_config: str | None = None  # diffusers folder/repo whose configs (+ tokenizers) describe a single file


def load_components(sources: ModelSources, family: str, dtype: torch.dtype,
                    keep_fp8: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every component of the family (table.Family.components); weights in `dtype`, the VAE in float32. The
    components named in keep_fp8 (those fp8_base stores in float8) keep a single file's float8 weights instead of
    upcasting them."""
    single = Path(sources.model).is_file()
    if single:
        _check_model_file(Path(sources.model), family)
        _check_split_files(sources, family)
    config_dir = _config_dir(sources, family) if single else sources.model
    components: dict[str, Any] = {}
    for name in FAMILIES[family].components:
        if name.startswith("tokenizer"):
            components[name] = _load_tokenizer(sources, family, name, single)
        elif name == "scheduler":
            components[name] = load_scheduler(config_dir, family, "base_model_config" if single else
                                              "pretrained_model_name_or_path")
        elif single or _override(sources, family, name):
            components[name] = _load_from_file(sources, family, name, config_dir, dtype, name in keep_fp8)
        else:
            components[name] = _load_from_folder(sources.model, name, family, _component_dtype(name, dtype))
    return components


def _component_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if name == "vae" else dtype  # fp16 VAEs overflow into NaN latents


def _override(sources: ModelSources, family: str, name: str) -> tuple[str, str] | None:
    """(config key, file) of a separately given component file, if any."""
    key = FAMILIES[family].separate_files.get(name)
    value = getattr(sources, SOURCE_FIELDS[name]) if key else None
    return (key, value) if value else None


# ---------------------------------------------------------------- what the files are


def _check_model_file(path: Path, family: str) -> None:
    """The base model file must be a full checkpoint (or, where the family allows it, its denoiser) of `family`."""
    found, spec = detect.describe_checkpoint(path), FAMILIES[family]
    key, label = "pretrained_model_name_or_path", spec.label
    if found.kind in ("model", "transformer") and found.family != family:
        raise UserError(f"{key}: '{path}' is {article(found.detail)} {found.detail}, not {label}",
                        f"pick a {label} model, or let the model family follow the file",
                        zh=f"{key}：'{path}' 是 {found.detail}，不是 {label}",
                        hint_zh=f"请选一个 {label} 模型，或把 model_family 设为 auto 跟随文件")
    if found.kind not in spec.model_kinds:
        raise UserError(f"{key}: '{path}' {detect.base_model_advice(path)}", _family_hint(family),
                        zh=f"{key}：'{path}' 不能直接作为底模：{detect.base_model_advice(path)}")
    variant = detect.ldm_variant(detect.tensor_names(path)) if spec.ldm_hint else "base"
    if variant != "base":
        raise UserError(f"{key}: '{path}' is {article(found.detail)} {found.detail}; LoRA training needs the "
                        f"{label} base model", f"pick the {label} base checkpoint, not the {variant} one",
                        zh=f"{key}：'{path}' 是 {found.detail}；训练 LoRA 需要 {label} 的基础模型",
                        hint_zh=f"请选 {label} 的基础模型，而不是 {variant} 版")


def _check_split_files(sources: ModelSources, family: str) -> None:
    """A denoiser file alone (Flux's transformer) lacks the VAE and text encoders: all their files must be given."""
    spec = FAMILIES[family]
    if detect.describe_checkpoint(Path(sources.model)).kind != spec.denoiser:
        return
    keys = {key: getattr(sources, SOURCE_FIELDS[name]) for name, key in spec.separate_files.items()}
    missing = [key for key, value in keys.items() if not value]
    if missing:
        what = f"{spec.label} {spec.denoiser} file"
        raise UserError(f"{', '.join(missing)}: required, since '{sources.model}' is {article(what)} {what} "
                        "without VAE and text encoders", f"set {_and(list(keys))} to the files kept next to it "
                        f"({', '.join(f'{key}.safetensors' for key in keys)})",
                        zh=f"{', '.join(missing)}：必须填写，因为 '{sources.model}' 是不带 VAE 和文本编码器的 {what}",
                        hint_zh=f"请把 {_and(list(keys))} 设为放在它旁边的文件"
                        f"（{', '.join(f'{key}.safetensors' for key in keys)}）")


def _family_hint(family: str) -> str:
    spec = FAMILIES[family]
    if spec.denoiser in spec.model_kinds:
        return (f"give the {spec.label} {spec.denoiser} file as pretrained_model_name_or_path and its "
                f"{_and(list(spec.separate_files.values()))} files, or a diffusers {spec.label} folder")
    return f"pick a full {spec.label} checkpoint (.safetensors) or a diffusers model folder"


def _and(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def _config_dir(sources: ModelSources, family: str) -> str:
    """Configs describing a single file: base_model_config, else the shipped ones of the detected variant."""
    if sources.base_model_config:
        return sources.base_model_config
    return str(SHIPPED_CONFIGS / shipped_config(family, Path(sources.model)))


def shipped_config(family: str, path: Path | None = None) -> str:
    """The folder in configs/ describing the single file at `path` (Flux: dev or schnell, told by the guidance
    embedder), or the family's standard architecture."""
    choices = FAMILIES[family].shipped_configs
    if path is None or len(choices) == 1:
        return choices[0]
    return f"{family}-{detect.flux_variant(detect.tensor_names(path))}"


# ---------------------------------------------------------------- diffusers folders and repo ids


def _load_from_folder(source: str, name: str, family: str, dtype: torch.dtype):
    cls = component_class(family, name)
    try:
        if name.startswith("text_encoder"):
            return cls.from_pretrained(source, subfolder=name, dtype=dtype)
        return cls.from_pretrained(source, subfolder=name, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise UserError(f"pretrained_model_name_or_path: cannot load the {name} of '{source}': {first_line(exc)}",
                        "give a diffusers model folder (with unet/ or transformer/, vae/, text_encoder/, "
                        "tokenizer/, scheduler/), a Hugging Face repo id while online, or a single "
                        ".safetensors checkpoint",
                        zh=f"pretrained_model_name_or_path：无法加载 '{source}' 的 {name}：{first_line(exc)}",
                        hint_zh="请给 diffusers 模型文件夹（含 unet/ 或 transformer/、vae/、text_encoder/、tokenizer/、"
                        "scheduler/）、联网时的 Hugging Face repo id，或单个 .safetensors 模型文件") from None


def load_scheduler(config_dir: str, family: str, key: str):
    """The family's training noise schedule (DDPM, or flow matching), whatever sampler the folder names."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[FAMILIES[family].scheduler])
    try:
        return cls.from_pretrained(config_dir, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise UserError(f"{key}: cannot load the scheduler config of '{config_dir}': {first_line(exc)}",
                        "give a diffusers folder with scheduler/scheduler_config.json",
                        zh=f"{key}：无法加载 '{config_dir}' 的调度器配置：{first_line(exc)}",
                        hint_zh="请给含 scheduler/scheduler_config.json 的 diffusers 文件夹") from None


def _load_tokenizer(sources: ModelSources, family: str, name: str, single: bool):
    from transformers import AutoTokenizer, CLIPTokenizer

    encoder = FAMILIES[family].text_encoder(name)
    cls = AutoTokenizer if encoder.architecture == "t5" else CLIPTokenizer
    folder = sources.model if not single else sources.base_model_config
    if folder and (not Path(folder).is_dir() or (Path(folder) / name).is_dir()):
        try:
            return _with_vocabulary(cls.from_pretrained(folder, subfolder=name))
        except (OSError, ValueError) as exc:
            key = "base_model_config" if single else "pretrained_model_name_or_path"
            raise UserError(f"{key}: cannot load the {name} of '{folder}': {first_line(exc)}",
                            f"give a diffusers folder of a {FAMILIES[family].label} model with {name}/",
                            zh=f"{key}：无法加载 '{folder}' 的 {name}：{first_line(exc)}",
                            hint_zh=f"请给含 {name}/ 的 {FAMILIES[family].label} diffusers 模型文件夹") from None
    # the same tokenizer as the diffusers repos': OpenCLIP's pads with "!"
    return _hub_tokenizer(cls, encoder.tokenizer, {"pad_token": "!"} if encoder.openclip else {}, family)


def _hub_tokenizer(cls, repo: str, kwargs: dict, family: str):
    """From the local HF cache first, so an offline machine never waits on a network timeout."""
    try:
        return _with_vocabulary(cls.from_pretrained(repo, local_files_only=True, **kwargs))
    except (OSError, ValueError):
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        if offline:
            raise OSError("HF_HUB_OFFLINE is set and it is not in the local cache")
        return _with_vocabulary(cls.from_pretrained(repo, **kwargs))
    except (OSError, ValueError) as exc:
        raise UserError(f"base_model_config: a single-file model has no tokenizer, and the tokenizer '{repo}' "
                        f"could not be loaded ({first_line(exc)})",
                        "connect to the internet once (it is then cached), or set base_model_config to a "
                        f"diffusers folder of a {FAMILIES[family].label} model",
                        zh=f"base_model_config：单文件模型不带分词器，而分词器 '{repo}' 加载失败（{first_line(exc)}）",
                        hint_zh=f"请联网一次（之后会缓存），或把 base_model_config 设为 {FAMILIES[family].label} "
                        "模型的 diffusers 文件夹") from None


def _with_vocabulary(tokenizer):
    # transformers 5 builds an empty CLIP tokenizer (2 special tokens) instead of failing when the files are missing
    if len(tokenizer) < MIN_VOCABULARY:
        raise OSError(f"its vocabulary files are missing (only {len(tokenizer)} tokens)")
    return tokenizer


# ---------------------------------------------------------------- single files


def _load_from_file(sources: ModelSources, family: str, name: str, config_dir: str, dtype: torch.dtype,
                    keep_fp8: bool = False):
    key, path = _override(sources, family, name) or ("pretrained_model_name_or_path", sources.model)
    if Path(path).is_dir() or not Path(path).exists():  # a separate VAE may be a diffusers folder or repo id
        return _load_vae_folder(key, path) if name == "vae" else _missing(key, path)
    return load_file_component(Path(path), key, family, name, config_dir, _component_dtype(name, dtype), keep_fp8)


def _missing(key: str, path: str):
    raise UserError(f"{key}: '{path}' does not exist", "check the path", zh=f"{key}：'{path}' 不存在",
                    hint_zh="请检查路径")


def _load_vae_folder(key: str, path: str):
    from diffusers import AutoencoderKL

    subfolder = None if (Path(path) / "config.json").is_file() or not Path(path).is_dir() else "vae"
    try:
        return AutoencoderKL.from_pretrained(path, subfolder=subfolder, torch_dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"{key}: cannot load the VAE '{path}': {first_line(exc)}",
                        "give a VAE .safetensors file, a diffusers VAE folder, or a model folder with vae/",
                        zh=f"{key}：无法加载 VAE '{path}'：{first_line(exc)}",
                        hint_zh="请给 VAE 的 .safetensors 文件、diffusers VAE 文件夹，或含 vae/ 的模型文件夹") from None

"""Load every component of a base model from what users actually have: a diffusers folder or Hugging Face repo
id, or single files (an A1111/ComfyUI checkpoint; Flux's transformer, ae, clip_l and t5xxl files; a separate VAE).

Single files are read with safetensors, or torch.load(weights_only=True) for .ckpt/.pt (no pickled code runs), and
converted with diffusers' LDM converters (UNet, VAE, OpenCLIP) or the BFL Flux map below. Architectures come from
the configs shipped in configs/ (or the user's base_model_config), so nothing is downloaded but the tokenizers.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from . import detect

COMPONENTS = {
    "sd1": ["tokenizer", "text_encoder", "unet", "vae", "scheduler"],
    "sd2": ["tokenizer", "text_encoder", "unet", "vae", "scheduler"],
    "sdxl": ["tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "unet", "vae", "scheduler"],
    "flux": ["tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae", "scheduler"],
}
SHIPPED_CONFIGS = Path(__file__).parent / "configs"
# Where tokenizers come from when a single file has none and base_model_config does not give them; keyword
# arguments make them equal to the diffusers repos' (OpenCLIP tokenizers pad with "!").
TOKENIZER_REPOS = {
    ("sd1", "tokenizer"): ("openai/clip-vit-large-patch14", {}),
    ("sd2", "tokenizer"): ("openai/clip-vit-large-patch14", {"pad_token": "!"}),
    ("sdxl", "tokenizer"): ("openai/clip-vit-large-patch14", {}),
    ("sdxl", "tokenizer_2"): ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", {"pad_token": "!"}),
    ("flux", "tokenizer"): ("openai/clip-vit-large-patch14", {}),
    ("flux", "tokenizer_2"): ("google/t5-v1_1-xxl", {}),
}
# Probe tensor of each component (in its file's own layout): the prefix in front of it is the component's.
CLIP_PROBE = "encoder.layers.0.self_attn.q_proj.weight"
OPENCLIP_PROBE = "transformer.resblocks.0.attn.in_proj_weight"
VAE_PROBE = "decoder.conv_in.weight"
T5_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
FLUX_PROBE = "double_blocks.0.img_attn.qkv.weight"
UNET_PREFIX = "model.diffusion_model."
# Text encoder layouts inside LDM checkpoints, and where a Flux all-in-one keeps its encoders.
LDM_TEXT_PREFIXES = {
    ("sd1", "text_encoder"): "cond_stage_model.transformer.",
    ("sd2", "text_encoder"): "cond_stage_model.model.",
    ("sdxl", "text_encoder"): "conditioner.embedders.0.transformer.",
    ("sdxl", "text_encoder_2"): "conditioner.embedders.1.model.",
    ("flux", "text_encoder"): "text_encoders.clip_l.transformer.",
    ("flux", "text_encoder_2"): "text_encoders.t5xxl.transformer.",
}
# Tensors files carry that the models do not have (buffers, the CLIP-L projection, a T5 decoder).
IGNORED_KEYS = re.compile(r"(^|\.)(position_ids|logit_scale)$|^(decoder|lm_head)\.|^scaled_fp8$")
# Components that may come from their own file: the ModelSources field that names it.
SEPARATE_FILES = {"vae": "vae", "text_encoder": "clip_l", "text_encoder_2": "t5xxl"}
MIN_VOCABULARY = 16  # an "empty" CLIP tokenizer has 2 tokens; even the tiny test vocabularies have 190+
MODEL_KINDS = {"sd1": ("model",), "sd2": ("model",), "sdxl": ("model",), "flux": ("transformer", "model")}


@dataclass
class ModelSources:
    model: str  # pretrained_model_name_or_path: diffusers folder, HF repo id, or a single file
    vae: str | None = None  # a separate VAE file or diffusers folder (sd-scripts `vae`); for Flux the `ae` file
    clip_l: str | None = None  # Flux split files (sd-scripts keys clip_l, t5xxl, ae)
    t5xxl: str | None = None
    base_model_config: str | None = None  # diffusers folder/repo whose configs (+ tokenizers) describe a single file


def detect_family(source: str) -> str | None:
    """"sd1" | "sd2" | "sdxl" | "flux" for a diffusers folder or a single file; None for a repo id or unknown."""
    path = Path(source)
    if path.is_file():
        return detect.describe_checkpoint(path).family
    if not path.is_dir():
        return None
    if (path / "transformer" / "config.json").is_file():
        return "flux"
    unet = _read_json(path / "unet" / "config.json")
    if unet is None:
        return None
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    text_encoder = _read_json(path / "text_encoder" / "config.json") or {}
    return "sd2" if text_encoder.get("hidden_act") == "gelu" else "sd1"  # OpenCLIP ViT-H; CLIP-L uses quick_gelu


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_components(sources: ModelSources, family: str, dtype: torch.dtype) -> dict[str, Any]:
    """Every component of COMPONENTS[family]; weights in `dtype`, the VAE in float32."""
    single = Path(sources.model).is_file()
    if single:
        _check_model_file(Path(sources.model), family)
        _check_split_files(sources, family)
    config_dir = _config_dir(sources, family) if single else sources.model
    components: dict[str, Any] = {}
    for name in COMPONENTS[family]:
        if name.startswith("tokenizer"):
            components[name] = _load_tokenizer(sources, family, name, single)
        elif name == "scheduler":
            components[name] = _load_scheduler(config_dir, family, "base_model_config" if single else
                                               "pretrained_model_name_or_path")
        elif single or _override(sources, family, name):
            components[name] = _load_from_file(sources, family, name, config_dir, dtype)
        else:
            components[name] = _load_from_folder(sources.model, name, family, _component_dtype(name, dtype))
    return components


def _component_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if name == "vae" else dtype  # fp16 VAEs overflow into NaN latents


def _override(sources: ModelSources, family: str, name: str) -> tuple[str, str] | None:
    """(config key, file) of a separately given component file, if any."""
    field = SEPARATE_FILES.get(name)
    if field is None or (name != "vae" and family != "flux"):
        return None
    value = getattr(sources, field)
    return ("ae" if family == "flux" and name == "vae" else field, value) if value else None


# ---------------------------------------------------------------- what the files are


def _check_model_file(path: Path, family: str) -> None:
    """The base model file must be a full checkpoint (or a Flux transformer) of `family`."""
    found = detect.describe_checkpoint(path)
    key, label = "pretrained_model_name_or_path", detect.FAMILY_LABELS[family]
    if found.kind in ("model", "transformer") and found.family != family:
        raise UserError(f"{key}: '{path}' is {_article(found.detail)} {found.detail}, not {label}",
                        f"pick a {label} model, or let the model family follow the file")
    if found.kind not in MODEL_KINDS[family]:
        raise UserError(f"{key}: '{path}' {detect.base_model_advice(path)}", _family_hint(family))
    variant = detect.ldm_variant(detect.tensor_names(path)) if family != "flux" else "base"
    if variant != "base":
        raise UserError(f"{key}: '{path}' is {_article(found.detail)} {found.detail}; LoRA training needs the "
                        f"{label} base model", f"pick the {label} base checkpoint, not the {variant} one")


def _check_split_files(sources: ModelSources, family: str) -> None:
    """A Flux transformer file alone lacks the VAE and text encoders: all three files must be given."""
    if family != "flux" or detect.describe_checkpoint(Path(sources.model)).kind != "transformer":
        return
    missing = [key for key, value in (("ae", sources.vae), ("clip_l", sources.clip_l), ("t5xxl", sources.t5xxl))
               if not value]
    if missing:
        raise UserError(f"{', '.join(missing)}: required, since '{sources.model}' is a Flux.1 transformer file "
                        "without VAE and text encoders", "set ae, clip_l and t5xxl to the files kept next to it "
                        "(ae.safetensors, clip_l.safetensors, t5xxl_fp16.safetensors)")


def _family_hint(family: str) -> str:
    if family == "flux":
        return ("give the Flux.1 transformer file (flux1-dev.safetensors) as pretrained_model_name_or_path and "
                "its ae, clip_l and t5xxl files, or a diffusers Flux.1 folder")
    return f"pick a full {detect.FAMILY_LABELS[family]} checkpoint (.safetensors) or a diffusers model folder"


def _article(text: str) -> str:
    return "an" if text[:1] in tuple("AEIOU") or text.startswith("SD") else "a"


def _config_dir(sources: ModelSources, family: str) -> str:
    """Configs describing a single file: base_model_config, else the shipped ones of the detected variant."""
    if sources.base_model_config:
        return sources.base_model_config
    name = family
    if family == "flux":
        names = detect.tensor_names(Path(sources.model))
        name = f"flux-{detect.flux_variant(names)}"
    return str(SHIPPED_CONFIGS / name)


# ---------------------------------------------------------------- diffusers folders and repo ids


def _load_from_folder(source: str, name: str, family: str, dtype: torch.dtype):
    cls = _component_class(family, name)
    try:
        if name.startswith("text_encoder"):
            return cls.from_pretrained(source, subfolder=name, dtype=dtype)
        return cls.from_pretrained(source, subfolder=name, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise UserError(f"pretrained_model_name_or_path: cannot load the {name} of '{source}': {_first_line(exc)}",
                        "give a diffusers model folder (with unet/ or transformer/, vae/, text_encoder/, "
                        "tokenizer/, scheduler/), a Hugging Face repo id while online, or a single "
                        ".safetensors checkpoint") from None


def _component_class(family: str, name: str):
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    return {"unet": UNet2DConditionModel, "transformer": FluxTransformer2DModel, "vae": AutoencoderKL,
            "text_encoder": CLIPTextModel,
            "text_encoder_2": T5EncoderModel if family == "flux" else CLIPTextModelWithProjection}[name]


def _load_scheduler(config_dir: str, family: str, key: str):
    # Training adds noise with DDPM's schedule (SD) or the flow-matching one (Flux), whatever sampler the repo names.
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if family == "flux" else DDPMScheduler
    try:
        return cls.from_pretrained(config_dir, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise UserError(f"{key}: cannot load the scheduler config of '{config_dir}': {_first_line(exc)}",
                        "give a diffusers folder with scheduler/scheduler_config.json") from None


def _load_tokenizer(sources: ModelSources, family: str, name: str, single: bool):
    from transformers import AutoTokenizer, CLIPTokenizer

    cls = AutoTokenizer if (family, name) == ("flux", "tokenizer_2") else CLIPTokenizer
    folder = sources.model if not single else sources.base_model_config
    if folder and (not Path(folder).is_dir() or (Path(folder) / name).is_dir()):
        try:
            return _with_vocabulary(cls.from_pretrained(folder, subfolder=name))
        except (OSError, ValueError) as exc:
            key = "base_model_config" if single else "pretrained_model_name_or_path"
            raise UserError(f"{key}: cannot load the {name} of '{folder}': {_first_line(exc)}",
                            f"give a diffusers folder of a {detect.FAMILY_LABELS[family]} model with {name}/") from None
    repo, kwargs = TOKENIZER_REPOS[(family, name)]
    return _hub_tokenizer(cls, repo, kwargs, family)


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
                        f"could not be loaded ({_first_line(exc)})",
                        "connect to the internet once (it is then cached), or set base_model_config to a "
                        f"diffusers folder of a {detect.FAMILY_LABELS[family]} model") from None


def _with_vocabulary(tokenizer):
    # transformers 5 builds an empty CLIP tokenizer (2 special tokens) instead of failing when the files are missing
    if len(tokenizer) < MIN_VOCABULARY:
        raise OSError(f"its vocabulary files are missing (only {len(tokenizer)} tokens)")
    return tokenizer


# ---------------------------------------------------------------- single files


def _load_from_file(sources: ModelSources, family: str, name: str, config_dir: str, dtype: torch.dtype):
    key, path = _override(sources, family, name) or ("pretrained_model_name_or_path", sources.model)
    if Path(path).is_dir() or not Path(path).exists():  # a separate VAE may be a diffusers folder or repo id
        return _load_vae_folder(key, path) if name == "vae" else _missing(key, path)
    checkpoint = _Checkpoint(Path(path), key)
    model = _empty_model(family, name, config_dir)
    if name == "unet":
        state = _unet_state(checkpoint, model)
    elif name == "transformer":
        state = _flux_state(checkpoint, model)
    elif name == "vae":
        state = _vae_state(checkpoint, model)
    elif (family, name) == ("flux", "text_encoder_2"):
        state = _t5_state(checkpoint, LDM_TEXT_PREFIXES[(family, name)])
    else:
        state = _text_encoder_state(checkpoint, model, LDM_TEXT_PREFIXES[(family, name)])
    _materialize(model, state, _component_dtype(name, dtype), key, path, name)
    return model.eval()


def _missing(key: str, path: str):
    raise UserError(f"{key}: '{path}' does not exist", "check the path")


def _load_vae_folder(key: str, path: str):
    from diffusers import AutoencoderKL

    subfolder = None if (Path(path) / "config.json").is_file() or not Path(path).is_dir() else "vae"
    try:
        return AutoencoderKL.from_pretrained(path, subfolder=subfolder, torch_dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"{key}: cannot load the VAE '{path}': {_first_line(exc)}",
                        "give a VAE .safetensors file, a diffusers VAE folder, or a model folder with vae/") from None


class _Checkpoint:
    """Tensor names of one file, and its tensors by prefix (loaded lazily from safetensors)."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        try:
            self.names = detect.tensor_names(path)
        except (detect.UnreadableFile, OSError) as exc:
            raise UserError(f"{key}: '{path}' is {exc}", "give a .safetensors model file") from None
        self._torch: dict | None = None

    def prefix(self, probe: str, preferred: str = "", scope: str = "") -> str | None:
        """The prefix in front of `probe`: `preferred` first, else the shortest starting with `scope` (an
        all-in-one file holds several components: SDXL's two CLIPs must not be mistaken for each other)."""
        if preferred + probe in self.names:
            return preferred
        found = [name[: -len(probe)] for name in self.names if name.endswith(probe) and name.startswith(scope)]
        return min(found, key=len) if found else None

    def scope(self, prefix: str) -> str:
        """`prefix` if the file holds anything under it (an LDM checkpoint), else "" (a single-component file)."""
        return prefix if any(name.startswith(prefix) for name in self.names) else ""

    def tensors(self, prefix: str, strip: bool = True) -> dict[str, torch.Tensor]:
        """The tensors under `prefix`, named without it (or with it: strip=False)."""
        names = [name for name in self.names if name.startswith(prefix)]
        cut = len(prefix) if strip else 0
        if self._is_safetensors():
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt", device="cpu") as handle:
                return {name[cut:]: handle.get_tensor(name) for name in names}
        return {name[cut:]: self._torch_tensors()[name] for name in names}

    def _is_safetensors(self) -> bool:
        with open(self.path, "rb") as handle:
            return not handle.read(4).startswith((b"PK\x03", b"\x80"))

    def _torch_tensors(self) -> dict:
        if self._torch is None:  # weights_only: a .ckpt cannot run code; detect already refused unsafe files
            data = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            self._torch = _flatten(data.get("state_dict", data) if isinstance(data, dict) else {}, "")
        return self._torch

    def require(self, probe: str, what: str, preferred: str = "", scope: str = "") -> str:
        prefix = self.prefix(probe, preferred, scope)
        if prefix is None:
            found = detect.describe_checkpoint(self.path)
            raise UserError(f"{self.key}: '{self.path}' has no {what}: it is {_article(found.detail)} {found.detail}",
                            f"give the file that holds the {what}")
        return prefix


def _flatten(data, prefix: str) -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> dotted names, as detect.tensor_names names them."""
    if isinstance(data, torch.Tensor):
        return {prefix: data}
    if not isinstance(data, dict):
        return {}
    flat: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _empty_model(family: str, name: str, config_dir: str):
    """The component's architecture from its config, with weights on the meta device (no memory, no init)."""
    from accelerate import init_empty_weights

    cls = _component_class(family, name)
    try:
        if name.startswith("text_encoder"):
            config = cls.config_class.from_pretrained(config_dir, subfolder=name)
            with init_empty_weights():
                return cls(config)
        config = cls.load_config(config_dir, subfolder=name)
    except (OSError, ValueError) as exc:
        raise UserError(f"base_model_config: no {name} config in '{config_dir}': {_first_line(exc)}",
                        f"give a diffusers folder of a {detect.FAMILY_LABELS[family]} model") from None
    with init_empty_weights():
        return cls.from_config(config)


def _unet_state(checkpoint: _Checkpoint, model) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    checkpoint.require("input_blocks.0.0.weight", "UNet", UNET_PREFIX)  # the kind check saw model.diffusion_model.*
    return convert_ldm_unet_checkpoint(checkpoint.tensors(UNET_PREFIX, strip=False), model.config)


def _vae_state(checkpoint: _Checkpoint, model) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prefix = checkpoint.require(VAE_PROBE, "VAE", "first_stage_model.")
    channels = checkpoint.names[prefix + VAE_PROBE][1]
    if channels != model.config.latent_channels:
        found = detect.describe_checkpoint(checkpoint.path)
        raise UserError(f"{checkpoint.key}: '{checkpoint.path}' is {_article(found.detail)} {found.detail}; this "
                        f"model needs a VAE with {model.config.latent_channels} latent channels",
                        "give the VAE made for this model family (Flux's ae has 16 channels, SD's VAEs 4)")
    tensors = checkpoint.tensors(prefix)
    if any(name.startswith("encoder.down_blocks.") for name in tensors):  # diffusers layout: nothing to convert
        return tensors
    return convert_ldm_vae_checkpoint(tensors, model.config)


def _text_encoder_state(checkpoint: _Checkpoint, model, ldm_prefix: str) -> dict:
    """CLIP (transformers layout, with or without `text_model.`) or OpenCLIP (resblocks) weights."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    scope = checkpoint.scope(ldm_prefix)
    prefix = checkpoint.prefix(CLIP_PROBE, ldm_prefix + "text_model.", scope)
    if prefix is None:
        prefix = checkpoint.require(OPENCLIP_PROBE, "CLIP text encoder", ldm_prefix, scope)
        state = convert_open_clip_checkpoint(model, checkpoint.tensors(prefix), prefix="")
        # SD2 uses OpenCLIP-H's penultimate layer: diffusers' text encoder has 23 of the file's 24 layers.
        layers = model.config.num_hidden_layers
        state = {k: v for k, v in state.items()
                 if int((re.match(r"text_model\.encoder\.layers\.(\d+)\.", k) or [0, 0])[1]) < layers}
    else:
        state = {"text_model." + k: v for k, v in checkpoint.tensors(prefix).items()}
        state.pop("text_model.text_projection.weight", None)  # CLIP-L files keep it at the top level
        projection = prefix.removesuffix("text_model.") + "text_projection.weight"
        if projection in checkpoint.names and hasattr(model, "text_projection"):
            state["text_projection.weight"] = checkpoint.tensors(projection)[""]
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel (not ...WithProjection)
        state = {k.removeprefix("text_model."): v for k, v in state.items() if k != "text_projection.weight"}
    return state


def _t5_state(checkpoint: _Checkpoint, ldm_prefix: str) -> dict:
    prefix = checkpoint.require(T5_PROBE, "T5 text encoder", ldm_prefix, checkpoint.scope(ldm_prefix))
    state = _unscale_fp8(checkpoint.tensors(prefix))
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    state.setdefault("encoder.embed_tokens.weight", state.get("shared.weight"))
    return state


def _unscale_fp8(state: dict) -> dict:
    """ComfyUI's "scaled" fp8 files store weight / scale_weight; the float value is weight * scale_weight."""
    for name in [n for n in state if n.endswith(".scale_weight")]:
        weight = name.removesuffix("scale_weight") + "weight"
        state[weight] = state[weight].float() * state.pop(name).float()
    return {k: v for k, v in state.items() if not k.endswith(".scale_input")}


def _materialize(model, state: dict, dtype: torch.dtype, key: str, path: str, name: str) -> None:
    """Load `state` into the meta-device `model` in `dtype`; every weight must be there, with its shape."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not IGNORED_KEYS.search(k) or k in expected}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        sample = (missing or unexpected or wrong)[0]
        problem = ("lacks" if missing else "has unexpected" if unexpected else "has a differently shaped")
        raise UserError(f"{key}: the {name} in '{path}' does not match its configuration ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} differently shaped tensors; it {problem} "
                        f"'{sample}')", "check the file is complete, or set base_model_config to a diffusers "
                        "folder of the same architecture")
    converted: dict[int, torch.Tensor] = {}  # tied weights (T5's shared / embed_tokens) stay one tensor
    state = {k: converted.setdefault(id(v), v.to(dtype)) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ---------------------------------------------------------------- Flux (BFL layout -> diffusers)

# diffusers' convert_flux_transformer_checkpoint_to_diffusers hard-codes the real model's width (3072), so the
# map is written here for any width; tests check it against diffusers' on full-width blocks.
FLUX_RENAMES = [
    *[(rf"^{bfl}\.{layer}_layer\.", f"time_text_embed.{ours}.linear_{n}.")
      for bfl, ours in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                        ("guidance_in", "guidance_embedder")) for layer, n in (("in", 1), ("out", 2))],
    (r"^txt_in\.", "context_embedder."),
    (r"^img_in\.", "x_embedder."),
    (r"^final_layer\.linear\.", "proj_out."),
    (r"^double_blocks\.(\d+)\.img_mod\.lin\.", r"transformer_blocks.\1.norm1.linear."),
    (r"^double_blocks\.(\d+)\.txt_mod\.lin\.", r"transformer_blocks.\1.norm1_context.linear."),
    (r"^double_blocks\.(\d+)\.img_attn\.norm\.query_norm\.scale$", r"transformer_blocks.\1.attn.norm_q.weight"),
    (r"^double_blocks\.(\d+)\.img_attn\.norm\.key_norm\.scale$", r"transformer_blocks.\1.attn.norm_k.weight"),
    (r"^double_blocks\.(\d+)\.txt_attn\.norm\.query_norm\.scale$", r"transformer_blocks.\1.attn.norm_added_q.weight"),
    (r"^double_blocks\.(\d+)\.txt_attn\.norm\.key_norm\.scale$", r"transformer_blocks.\1.attn.norm_added_k.weight"),
    (r"^double_blocks\.(\d+)\.img_attn\.proj\.", r"transformer_blocks.\1.attn.to_out.0."),
    (r"^double_blocks\.(\d+)\.txt_attn\.proj\.", r"transformer_blocks.\1.attn.to_add_out."),
    (r"^double_blocks\.(\d+)\.img_mlp\.0\.", r"transformer_blocks.\1.ff.net.0.proj."),
    (r"^double_blocks\.(\d+)\.img_mlp\.2\.", r"transformer_blocks.\1.ff.net.2."),
    (r"^double_blocks\.(\d+)\.txt_mlp\.0\.", r"transformer_blocks.\1.ff_context.net.0.proj."),
    (r"^double_blocks\.(\d+)\.txt_mlp\.2\.", r"transformer_blocks.\1.ff_context.net.2."),
    (r"^single_blocks\.(\d+)\.modulation\.lin\.", r"single_transformer_blocks.\1.norm.linear."),
    (r"^single_blocks\.(\d+)\.norm\.query_norm\.scale$", r"single_transformer_blocks.\1.attn.norm_q.weight"),
    (r"^single_blocks\.(\d+)\.norm\.key_norm\.scale$", r"single_transformer_blocks.\1.attn.norm_k.weight"),
    (r"^single_blocks\.(\d+)\.linear2\.", r"single_transformer_blocks.\1.proj_out."),
]
# Fused projections, split in this order along dim 0.
FLUX_SPLITS = [
    (r"^double_blocks\.(\d+)\.img_attn\.qkv\.", r"transformer_blocks.\1.attn.", ["to_q", "to_k", "to_v"]),
    (r"^double_blocks\.(\d+)\.txt_attn\.qkv\.", r"transformer_blocks.\1.attn.",
     ["add_q_proj", "add_k_proj", "add_v_proj"]),
    (r"^single_blocks\.(\d+)\.linear1\.", r"single_transformer_blocks.\1.",
     ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]),
]


def _flux_state(checkpoint: _Checkpoint, model) -> dict:
    if checkpoint.prefix("transformer_blocks.0.attn.to_q.weight") == "":
        return checkpoint.tensors("")  # already in diffusers layout
    prefix = checkpoint.require(FLUX_PROBE, "Flux.1 transformer", "model.diffusion_model.")
    width = model.config.num_attention_heads * model.config.attention_head_dim
    return convert_flux_bfl(checkpoint.tensors(prefix), width)


def convert_flux_bfl(state: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """BFL Flux.1 transformer weights -> diffusers FluxTransformer2DModel names, for a model `width` wide."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("final_layer.adaLN_modulation.1."):  # BFL: shift, scale; diffusers: scale, shift
            shift, scale = tensor.chunk(2, dim=0)
            out["norm_out.linear." + name.rsplit(".", 1)[1]] = torch.cat([scale, shift])
            continue
        split = next(((re.match(p, name), base, parts) for p, base, parts in FLUX_SPLITS if re.match(p, name)), None)
        if split:
            match, base, parts = split
            sizes = [width] * (len(parts) - 1) + [tensor.shape[0] - width * (len(parts) - 1)]
            for part, piece in zip(parts, tensor.split(sizes, dim=0)):
                out[match.expand(base) + part + "." + name.rsplit(".", 1)[1]] = piece
            continue
        out[_flux_rename(name)] = tensor
    return out


def _flux_rename(name: str) -> str:
    for pattern, target in FLUX_RENAMES:
        match = re.match(pattern, name)
        if match:
            return match.expand(target) + name[match.end():]
    return name  # unknown: reported as unexpected by _materialize

"""Read one component (UNet, Flux transformer, VAE, CLIP, T5) from a single file in the layout users have it in:
A1111/ComfyUI checkpoints (LDM keys), BFL Flux files, ComfyUI's clip_l/t5xxl/ae files, diffusers exports.

safetensors files are read lazily (only the tensors a component needs); .ckpt/.pt through
torch.load(weights_only=True), so no pickled code runs. The architecture comes from a diffusers config folder;
diffusers' LDM converters (UNet, VAE, OpenCLIP) or the BFL Flux map below rename the weights, and every weight must
then be present with its shape.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from trainer.common.errors import UserError
from trainer.families import detect
from trainer.families.table import FAMILIES

# Probe tensor of each component (in its file's own layout): the prefix in front of it is the component's.
CLIP_PROBE = "encoder.layers.0.self_attn.q_proj.weight"
OPENCLIP_PROBE = "transformer.resblocks.0.attn.in_proj_weight"
VAE_PROBE = "decoder.conv_in.weight"
T5_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
FLUX_PROBE = "double_blocks.0.img_attn.qkv.weight"
UNET_PREFIX = "model.diffusion_model."
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)  # the float8 formats of fp8 checkpoint files
# Tensors files carry that the models do not have (buffers, the CLIP-L projection, a T5 decoder).
IGNORED_KEYS = re.compile(r"(^|\.)(position_ids|logit_scale)$|^(decoder|lm_head)\.|^scaled_fp8$")

def component_class(family: str, name: str):
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    if name.startswith("text_encoder"):
        architecture = FAMILIES[family].text_encoder(name).architecture
        return {"clip": CLIPTextModel, "clip_projection": CLIPTextModelWithProjection,
                "t5": T5EncoderModel}[architecture]
    return {"unet": UNet2DConditionModel, "transformer": FluxTransformer2DModel, "vae": AutoencoderKL}[name]


def article(text: str) -> str:
    return "an" if text[:1] in tuple("AEIOU") or text.startswith("SD") else "a"


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_file_component(path: Path, key: str, family: str, name: str, config_dir: str, dtype: torch.dtype,
                        keep_fp8: bool = False):
    """Component `name` of `family` from the file at `path` (given as config key `key`), in `dtype`; with
    keep_fp8, the file's float8 Linear and conv weights stay float8 (fp8_base stores them so anyway)."""
    checkpoint = _Checkpoint(path, key)
    model = empty_model(family, name, config_dir)
    if name == "unet":
        state = _unet_state(checkpoint, model)
    elif name == "transformer":
        state = _flux_state(checkpoint, model)
    elif name == "vae":
        state = _vae_state(checkpoint, model)
    else:
        encoder = FAMILIES[family].text_encoder(name)
        state = (_t5_state(checkpoint, encoder.file_prefix) if encoder.architecture == "t5"
                 else _text_encoder_state(checkpoint, model, encoder.file_prefix))
    _materialize(model, state, dtype, key, str(path), name, keep_fp8)
    return model.eval()


class _Checkpoint:
    """Tensor names of one file, and its tensors by prefix (loaded lazily from safetensors)."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        try:
            self.names = detect.tensor_names(path)
        except (detect.UnreadableFile, OSError) as exc:
            raise UserError(f"{key}: '{path}' is {exc}", "give a .safetensors model file",
                            zh=f"{key}：'{path}' 读取失败：{exc}", hint_zh="请给 .safetensors 模型文件") from None
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
            raise UserError(f"{self.key}: '{self.path}' has no {what}: it is {article(found.detail)} {found.detail}",
                            f"give the file that holds the {what}",
                            zh=f"{self.key}：'{self.path}' 里没有 {what}：它是 {found.detail}",
                            hint_zh=f"请给含有 {what} 的文件")
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


def empty_model(family: str, name: str, config_dir: str):
    """The component's architecture from its config, with weights on the meta device (no memory, no init)."""
    from accelerate import init_empty_weights

    cls = component_class(family, name)
    try:
        if name.startswith("text_encoder"):
            config = cls.config_class.from_pretrained(config_dir, subfolder=name)
            with init_empty_weights():
                return cls(config)
        config = cls.load_config(config_dir, subfolder=name)
    except (OSError, ValueError) as exc:
        raise UserError(f"base_model_config: no {name} config in '{config_dir}': {first_line(exc)}",
                        f"give a diffusers folder of a {FAMILIES[family].label} model",
                        zh=f"base_model_config：'{config_dir}' 里没有 {name} 的配置：{first_line(exc)}",
                        hint_zh=f"请给 {FAMILIES[family].label} 模型的 diffusers 文件夹") from None
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
        raise UserError(f"{checkpoint.key}: '{checkpoint.path}' is {article(found.detail)} {found.detail}; this "
                        f"model needs a VAE with {model.config.latent_channels} latent channels",
                        "give the VAE made for this model family (Flux's ae has 16 channels, SD's VAEs 4)",
                        zh=f"{checkpoint.key}：'{checkpoint.path}' 是 {found.detail}；这个模型需要 "
                        f"{model.config.latent_channels} 个 latent 通道的 VAE",
                        hint_zh="请给这个模型家族专用的 VAE（Flux 的 ae 是 16 通道，SD 的 VAE 是 4 通道）")
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


def _materialize(model, state: dict, dtype: torch.dtype, key: str, path: str, name: str,
                 keep_fp8: bool = False) -> None:
    """Load `state` into the meta-device `model` in `dtype`, but for the float8 Linear/conv weights keep_fp8 keeps
    (an fp8 Flux file upcast to bf16 would take twice its 12 GB of RAM); every weight must be there, with its shape."""
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
                        "folder of the same architecture",
                        zh=f"{key}：'{path}' 里的 {name} 与它的配置对不上（缺 {len(missing)} 个、"
                        f"多 {len(unexpected)} 个、"
                        f"形状不同 {len(wrong)} 个张量；例如 '{sample}'）",
                        hint_zh="请检查文件是否完整，或把 base_model_config 设为同一结构的 diffusers 文件夹")
    kept = _fp8_weight_names(model) if keep_fp8 else set()
    converted: dict[int, torch.Tensor] = {}  # tied weights (T5's shared / embed_tokens) stay one tensor
    state = {k: converted.setdefault(id(v), v if k in kept and v.dtype in FP8 else v.to(dtype))
             for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)


def _fp8_weight_names(model) -> set[str]:
    """The weights fp8_base stores in float8 (training.fp8.store_in_fp8): those of every Linear and conv."""
    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, layers)}


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

"""Diffusers components -> the original layouts A1111, Forge and ComfyUI load: LDM checkpoints
(`model.diffusion_model.`, `first_stage_model.`, the text encoders under `cond_stage_model.` / `conditioner.`) and
BFL's Flux transformer (flux1-dev.safetensors). The inverse of the loader's converters (single_file.py), as
diffusers' scripts convert_diffusers_to_original_stable_diffusion.py / _sdxl.py do it.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from trainer.families.table import FAMILIES

Tensors = dict[str, torch.Tensor]

RESNET_RENAMES = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                  ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _rename(name: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        name = name.replace(old, new)
    return name


def ldm_unet(state: Tensors, config: dict) -> Tensors:
    """diffusers UNet2DConditionModel -> LDM `model.diffusion_model.*` (generic in levels and layers_per_block)."""
    per = config["layers_per_block"] + 1  # LDM counts each level's downsampler (or upsampler) as a block
    moves = [(r"^conv_in\.", "input_blocks.0.0."), (r"^time_embedding\.linear_1\.", "time_embed.0."),
             (r"^time_embedding\.linear_2\.", "time_embed.2."), (r"^add_embedding\.linear_1\.", "label_emb.0.0."),
             (r"^add_embedding\.linear_2\.", "label_emb.0.2."), (r"^conv_norm_out\.", "out.0."),
             (r"^conv_out\.", "out.2."), (r"^mid_block\.resnets\.(\d)\.", lambda m: f"middle_block.{2 * int(m[1])}."),
             (r"^mid_block\.attentions\.0\.", "middle_block.1."),
             (r"^down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0."),
             (r"^down_blocks\.(\d+)\.attentions\.(\d+)\.",
              lambda m: f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1."),
             (r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.", lambda m: f"input_blocks.{(int(m[1]) + 1) * per}.0.op."),
             (r"^up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"output_blocks.{int(m[1]) * per + int(m[2])}.0."),
             (r"^up_blocks\.(\d+)\.attentions\.(\d+)\.", lambda m: f"output_blocks.{int(m[1]) * per + int(m[2])}.1."),
             (r"^up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"output_blocks.{int(m[1]) * per + per - 1}."
              f"{2 if 'CrossAttn' in config['up_block_types'][int(m[1])] else 1}.")]
    out = {}
    for name, tensor in state.items():
        for pattern, target in moves:
            new = re.sub(pattern, target, name)
            if new != name:
                if ".resnets." in name:
                    new = _rename(new, RESNET_RENAMES)
                out["model.diffusion_model." + new] = tensor
                break
        else:
            raise KeyError(name)
    return out


def ldm_vae(state: Tensors, config: dict) -> Tensors:
    """diffusers AutoencoderKL -> LDM VAE keys (Flux's ae uses the same names)."""
    levels = len(config["up_block_types"])
    moves = [(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
             (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
             (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
             (r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block."),
             (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
              lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample."),
             (r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
             (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1.")]
    out = {}
    for name, tensor in state.items():
        for pattern, target in moves:
            name = re.sub(pattern, target, name)
        name = name.replace("conv_shortcut", "nin_shortcut")
        if ".attn_1." in name:  # LDM's attention uses 1x1 convolutions
            name = _rename(name, [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                                  ("to_out.0", "proj_out")])
            tensor = tensor[:, :, None, None] if tensor.ndim == 2 else tensor
        out[name] = tensor
    return out


def hf_clip(state: Tensors, prefix: str) -> Tensors:
    """transformers CLIP text model -> `prefix` + transformers 4 names (text_model.*), as LDM files keep CLIP-L."""
    return {prefix + (name if name.startswith(("text_model.", "text_projection")) else "text_model." + name): tensor
            for name, tensor in state.items()}


def open_clip(state: Tensors, prefix: str) -> Tensors:
    """transformers CLIP text model -> OpenCLIP names (resblocks, fused in_proj), as SD2 / SDXL files keep it."""
    state = {name.removeprefix("text_model."): tensor for name, tensor in state.items()}
    out = {prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
           prefix + "ln_final.bias": state.pop("final_layer_norm.bias")}
    projection = state.pop("text_projection.weight", None)
    width = out[prefix + "ln_final.weight"].shape[0]
    out[prefix + "text_projection"] = projection.T.contiguous() if projection is not None else torch.eye(width)
    layers = {int(m[1]) for m in (re.match(r"encoder\.layers\.(\d+)\.", n) for n in state) if m}
    for i in sorted(layers):
        ours, theirs = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{theirs}attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{ours}self_attn.{p}_proj.{kind}") for p in "qkv"])
            for old, new in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                             ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{theirs}{new}.{kind}"] = state.pop(f"{ours}{old}.{kind}")
    if state:  # a weight no OpenCLIP name exists for: refuse rather than drop it
        raise KeyError(min(state))
    return out


def bfl_flux(state: Tensors) -> Tensors:
    """diffusers FluxTransformer2DModel -> BFL names (fused qkv and linear1, shift/scale order)."""
    state = dict(state)
    out: Tensors = {}
    doubles = {int(m[1]) for m in (re.match(r"transformer_blocks\.(\d+)\.", n) for n in state) if m}
    singles = {int(m[1]) for m in (re.match(r"single_transformer_blocks\.(\d+)\.", n) for n in state) if m}
    for kind in ("weight", "bias"):
        for i in doubles:
            d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
            out[f"{b}img_attn.qkv.{kind}"] = torch.cat([state.pop(f"{d}attn.to_{p}.{kind}") for p in "qkv"])
            out[f"{b}txt_attn.qkv.{kind}"] = torch.cat([state.pop(f"{d}attn.add_{p}_proj.{kind}") for p in "qkv"])
        for i in singles:
            d = f"single_transformer_blocks.{i}."
            parts = [f"{d}attn.to_q", f"{d}attn.to_k", f"{d}attn.to_v", f"{d}proj_mlp"]
            out[f"single_blocks.{i}.linear1.{kind}"] = torch.cat([state.pop(f"{p}.{kind}") for p in parts])
        scale, shift = state.pop(f"norm_out.linear.{kind}").chunk(2)
        out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    renames = [(r"^time_text_embed\.timestep_embedder\.linear_1\.", "time_in.in_layer."),
               (r"^time_text_embed\.timestep_embedder\.linear_2\.", "time_in.out_layer."),
               (r"^time_text_embed\.text_embedder\.linear_1\.", "vector_in.in_layer."),
               (r"^time_text_embed\.text_embedder\.linear_2\.", "vector_in.out_layer."),
               (r"^time_text_embed\.guidance_embedder\.linear_1\.", "guidance_in.in_layer."),
               (r"^time_text_embed\.guidance_embedder\.linear_2\.", "guidance_in.out_layer."),
               (r"^context_embedder\.", "txt_in."), (r"^x_embedder\.", "img_in."),
               (r"^proj_out\.", "final_layer.linear."),
               (r"^transformer_blocks\.(\d+)\.norm1\.linear\.", r"double_blocks.\1.img_mod.lin."),
               (r"^transformer_blocks\.(\d+)\.norm1_context\.linear\.", r"double_blocks.\1.txt_mod.lin."),
               (r"^transformer_blocks\.(\d+)\.attn\.norm_q\.weight",
                r"double_blocks.\1.img_attn.norm.query_norm.scale"),
               (r"^transformer_blocks\.(\d+)\.attn\.norm_k\.weight", r"double_blocks.\1.img_attn.norm.key_norm.scale"),
               (r"^transformer_blocks\.(\d+)\.attn\.norm_added_q\.weight",
                r"double_blocks.\1.txt_attn.norm.query_norm.scale"),
               (r"^transformer_blocks\.(\d+)\.attn\.norm_added_k\.weight",
                r"double_blocks.\1.txt_attn.norm.key_norm.scale"),
               (r"^transformer_blocks\.(\d+)\.attn\.to_out\.0\.", r"double_blocks.\1.img_attn.proj."),
               (r"^transformer_blocks\.(\d+)\.attn\.to_add_out\.", r"double_blocks.\1.txt_attn.proj."),
               (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"double_blocks.\1.img_mlp.0."),
               (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"double_blocks.\1.img_mlp.2."),
               (r"^transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj\.", r"double_blocks.\1.txt_mlp.0."),
               (r"^transformer_blocks\.(\d+)\.ff_context\.net\.2\.", r"double_blocks.\1.txt_mlp.2."),
               (r"^single_transformer_blocks\.(\d+)\.norm\.linear\.", r"single_blocks.\1.modulation.lin."),
               (r"^single_transformer_blocks\.(\d+)\.attn\.norm_q\.weight", r"single_blocks.\1.norm.query_norm.scale"),
               (r"^single_transformer_blocks\.(\d+)\.attn\.norm_k\.weight", r"single_blocks.\1.norm.key_norm.scale"),
               (r"^single_transformer_blocks\.(\d+)\.proj_out\.", r"single_blocks.\1.linear2.")]
    for name, tensor in state.items():
        new = next((re.sub(p, t, name) for p, t in renames if re.match(p, name)), None)
        if new is None:
            raise KeyError(name)
        out[new] = tensor
    return out


def original_file(family: str, components: dict[str, Any]) -> Tensors:
    """The one file A1111/Forge/ComfyUI load of a loaded `family` model, holding its table row's
    single_file_parts: an LDM checkpoint, or BFL's fused transformer alone (like flux1-dev.safetensors)."""
    spec = FAMILIES[family]
    states = {name: components[name].state_dict() for name in spec.single_file_parts}
    if spec.fused_qkv:
        return bfl_flux(states[spec.denoiser])
    return ldm_checkpoint(family, states, {name: dict(components[name].config) for name in ("unet", "vae")})


def ldm_checkpoint(family: str, states: dict[str, Tensors], configs: dict[str, dict]) -> Tensors:
    """One A1111-style SD1 / SD2 / SDXL checkpoint from the diffusers state dicts (and configs) of unet, vae and
    the family's text encoder(s), each where its file_prefix says, in its layout (transformers CLIP or OpenCLIP)."""
    out = ldm_unet(states["unet"], configs["unet"])
    out.update({"first_stage_model." + k: v for k, v in ldm_vae(states["vae"], configs["vae"]).items()})
    for encoder in FAMILIES[family].text_encoders:
        convert = open_clip if encoder.openclip else hf_clip
        out.update(convert(states[encoder.component], encoder.file_prefix))
    return out

"""Flux.1 LoRA names: diffusers' FluxTransformer2DModel (peft) <-> kohya / ComfyUI / Forge (BFL module names).

The original Flux model fuses projections that diffusers keeps apart: a double block's img_attn.qkv is
diffusers' to_q/to_k/to_v, a single block's linear1 is to_q/to_k/to_v/proj_mlp. One LoRA per diffusers module
becomes one kohya module with lora_down = the A matrices stacked (n*r x in) and lora_up = the B matrices on the
block diagonal (out x n*r), so each part keeps its own update. Its rank is n*r, so the file's alpha is n*alpha:
alpha / rank, the scale every loader applies, stays the trained alpha / r. (sd-scripts' split_qkv keeps alpha
unchanged there, which loaders then apply at a third of the trained strength; diffusers' converter reads
alpha / (n*r), as written here.)
"""

from __future__ import annotations

import re

import torch

from trainer.families.table import FAMILIES

# sd-scripts' prefixes, which ComfyUI and Forge read: lora_unet for the transformer, lora_te1 CLIP-L, lora_te3 T5-XXL
FLUX_PREFIX = FAMILIES["flux"].denoiser_prefix
CLIP_PREFIX, T5_PREFIX = (encoder.lora_prefix for encoder in FAMILIES["flux"].text_encoders)
# sd-scripts' T5 targets: the linear layers of T5Attention and T5DenseGatedActDense (peft suffixes).
T5_TARGETS = ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]

# kohya module suffix -> the diffusers modules it fuses, in the order of the fused weight's rows.
DOUBLE_BLOCK = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
}
SINGLE_BLOCK = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
}
# diffusers block list -> (kohya block name, its modules)
BLOCKS = {"transformer_blocks": ("double_blocks", DOUBLE_BLOCK),
          "single_transformer_blocks": ("single_blocks", SINGLE_BLOCK)}
BLOCKS_BY_KOHYA = {kohya: modules for kohya, modules in BLOCKS.values()}
DIFFUSERS_BLOCK = {kohya: block for block, (kohya, _) in BLOCKS.items()}


def _alternatives(paths) -> str:
    return "|".join(re.escape(p) for p in sorted(set(paths)))


# peft target_modules as one regular expression (peft full-matches a string against each module name): a
# suffix list cannot name the single blocks' proj_out without also catching the model's final proj_out.
# Only attention and MLP projections: no modulation (norm*.linear) and no embedders, as sd-scripts.
FLUX_TARGETS = "|".join(
    rf"{re.escape(block)}\.\d+\.({_alternatives(p for parts in modules.values() for p in parts)})"
    for block, (_, modules) in BLOCKS.items())

_PEFT_KEY = re.compile(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)\.lora_([AB])\.weight")
_KOHYA_KEY = re.compile(
    rf"{FLUX_PREFIX}_(double_blocks|single_blocks)_(\d+)_(\w+?)\.(lora_down\.weight|lora_up\.weight|alpha)")


def kohya_flux_state_dict(peft_state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """peft's get_peft_model_state_dict(transformer) as kohya keys, fused modules joined (module docstring).

    Every module gets <name>.lora_down.weight, .lora_up.weight and its real .alpha (not the rank).
    """
    parts = _group_peft(peft_state)
    out: dict[str, torch.Tensor] = {}
    for (block, index), present in sorted(parts.items()):
        kohya_block, modules = BLOCKS[block]
        for suffix, paths in modules.items():
            found = [p for p in paths if p in present]
            if not found:
                continue
            if len(found) != len(paths):
                raise ValueError(f"{block}.{index}: LoRA on {found} but not on all of {list(paths)}; the kohya "
                                 f"module {suffix} needs all of them")
            name = f"{FLUX_PREFIX}_{kohya_block}_{index}_{suffix}"
            downs = [present[p]["A"] for p in paths]
            ups = [present[p]["B"] for p in paths]
            out[f"{name}.lora_down.weight"] = torch.cat(downs, 0) if len(paths) > 1 else downs[0]
            out[f"{name}.lora_up.weight"] = torch.block_diag(*ups) if len(paths) > 1 else ups[0]
            out[f"{name}.alpha"] = torch.tensor(float(alpha) * len(paths))
    return out


def _group_peft(peft_state: dict[str, torch.Tensor]) -> dict[tuple[str, int], dict[str, dict[str, torch.Tensor]]]:
    """{(block list, index): {module path: {"A": tensor, "B": tensor}}}; refuses keys of other modules."""
    known = {path for _, modules in BLOCKS.values() for paths in modules.values() for path in paths}
    parts: dict[tuple[str, int], dict[str, dict[str, torch.Tensor]]] = {}
    for key, tensor in peft_state.items():
        match = _PEFT_KEY.fullmatch(key)
        if match is None or match[3] not in known:
            raise ValueError(f"{key}: not a Flux LoRA module that kohya's layout has a name for")
        block, index, path, kind = match[1], int(match[2]), match[3], match[4]
        parts.setdefault((block, index), {}).setdefault(path, {})[kind] = tensor.detach()
    return parts


def peft_state_from_kohya_flux(tensors: dict[str, torch.Tensor], rank: int, alpha: float
                               ) -> tuple[dict[str, torch.Tensor], set[str]]:
    """A kohya Flux LoRA as peft state (for set_peft_model_state_dict) of a LoRA with this rank and alpha.

    Fused modules are split back: block-diagonal ones (rank n*rank, as kohya_flux_state_dict and sd-scripts'
    split_qkv write) into their blocks; dense ones of rank `rank` (sd-scripts' default Flux LoRA) by giving
    every part the same lora_down and its rows of lora_up. lora_up is rescaled by the file's alpha/rank over
    alpha/rank, so the model computes exactly the file's update. Returns (peft state, the file keys used); keys
    of other modules (text encoders, embedders, modulation) are left for the caller.
    Raises ValueError naming the key when a module cannot be represented with this rank.
    """
    modules: dict[tuple[str, int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KOHYA_KEY.fullmatch(key)
        if match and match[3] in BLOCKS_BY_KOHYA[match[1]]:
            modules.setdefault((match[1], int(match[2]), match[3]), {})[match[4]] = tensor
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for (kohya_block, index, suffix), weights in sorted(modules.items()):
        name = f"{FLUX_PREFIX}_{kohya_block}_{index}_{suffix}"
        if "lora_down.weight" not in weights or "lora_up.weight" not in weights:
            raise ValueError(f"{name}: the file has no lora_down/lora_up pair for this module")
        block = DIFFUSERS_BLOCK[kohya_block]
        paths = BLOCKS[block][1][suffix]
        pairs = _split(name, weights, len(paths), rank, alpha)
        for path, (down, up) in zip(paths, pairs):
            state[f"{block}.{index}.{path}.lora_A.weight"] = down
            state[f"{block}.{index}.{path}.lora_B.weight"] = up
        used |= {f"{name}.{kind}" for kind in weights}
    return state, used



def _split(name: str, weights: dict[str, torch.Tensor], parts: int, rank: int, alpha: float
           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lora_A, lora_B) per fused part, lora_B rescaled from the file's alpha/rank to alpha/rank."""
    down, up = weights["lora_down.weight"], weights["lora_up.weight"]
    file_rank = down.shape[0]
    file_alpha = float(weights["alpha"]) if "alpha" in weights else float(file_rank)  # kohya: no alpha = rank
    factor = (file_alpha / file_rank) / (alpha / rank)
    hidden = down.shape[1]  # every fused Flux module reads the hidden state: q, k, v are hidden wide each
    dims = [hidden] * (parts - 1) + [up.shape[0] - hidden * (parts - 1)] if parts > 1 else [up.shape[0]]
    ups = torch.split(up, dims, 0)
    if file_rank == rank:  # one module, or sd-scripts' dense fused LoRA: all parts share lora_down
        return [(down, part * factor) for part in ups]
    if file_rank == parts * rank and _block_diagonal(ups, rank):
        downs = torch.split(down, rank, 0)
        return [(downs[i], ups[i][:, i * rank:(i + 1) * rank] * factor) for i in range(parts)]
    if file_rank == parts * rank:
        raise ValueError(f"network_weights: {name} is a fused LoRA of rank {file_rank} that is not "
                         f"block-diagonal, so it cannot be continued with network_dim {rank}: set network_dim "
                         f"to {file_rank}")
    raise ValueError(f"network_weights: {name} has rank {file_rank}, but network_dim is {rank}: set network_dim "
                     f"to the rank the file was trained with")


def _block_diagonal(ups: tuple[torch.Tensor, ...], rank: int) -> bool:
    """Whether part i of lora_up uses only columns i*rank..(i+1)*rank (sd-scripts' "sparse" check)."""
    for i, part in enumerate(ups):
        outside = torch.cat([part[:, :i * rank], part[:, (i + 1) * rank:]], 1)
        if outside.count_nonzero():
            return False
    return True


def diffusers_flux_state_dict(peft_state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The diffusers / peft layout: transformer.<peft key>, plus transformer.<module>.alpha that
    FluxPipeline.load_lora_weights (and ComfyUI) read as the LoRA's alpha."""
    out = {f"transformer.{key}": tensor.detach() for key, tensor in peft_state.items()}
    for key in peft_state:
        if key.endswith(".lora_A.weight"):
            out[f"transformer.{key[:-len('.lora_A.weight')]}.alpha"] = torch.tensor(float(alpha))
    return out

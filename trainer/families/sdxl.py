"""SDXL: two text encoders (CLIP-L and OpenCLIP-G), a UNet conditioned on the pooled text embedding and on
each image's size and crop (micro-conditioning), and SD's DDPM noise schedule."""

from __future__ import annotations

import re
from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline

from trainer.adapters.layers import Rename
from trainer.families.base import AdapterPart, Conditioning
from trainer.families.sd import (
    TEXT_ENCODER_TARGETS,
    SDFamily,
    splice_windows,
    text_encoder_rename,
    tokenize,
)

# SDXL uses the penultimate layer of both encoders, without the final layer norm.
HIDDEN_LAYER = -2


class SDXLFamily(SDFamily):
    name = "sdxl"
    unsupported = {
        **SDFamily.unsupported,
        "v2": "SDXL is not an SD2.x model",
        "clip_skip": "SDXL always reads the penultimate layer of both text encoders (sd-scripts ignores clip_skip)",
    }

    @classmethod
    def identify(cls, components: dict[str, Any]) -> str:
        return cls.name

    def tokenizers(self) -> list:
        return [self.components["tokenizer"], self.components["tokenizer_2"]]

    # --- LoRA parts ---------------------------------------------------------------------------------------
    def denoiser_part(self) -> AdapterPart:
        config = self.denoiser.config
        return AdapterPart("unet", self.denoiser, self.unet_targets(), self.spec.denoiser_prefix,
                           self.config.effective_unet_lr,
                           ldm_unet_rename(config.layers_per_block, attention_up_blocks(config.up_block_types)),
                           conv_targets=self.conv_targets())

    def text_encoder_parts(self) -> list[AdapterPart]:
        lrs = self.config.text_encoder_lrs(2)
        return [AdapterPart(spec.component, encoder, TEXT_ENCODER_TARGETS, spec.lora_prefix, lr,
                            text_encoder_rename(encoder))
                for spec, encoder, lr in zip(self.spec.text_encoders, self.text_encoders, lrs)]

    # --- a training step ----------------------------------------------------------------------------------
    def encode_text(self, captions: list[str]) -> Conditioning:
        """Both encoders' penultimate states side by side (768 + 1280 wide) and OpenCLIP-G's pooled projection;
        with max_token_length over 75 the pooled embedding is the first window's, as sd-scripts."""
        hidden, pooled = [], None
        with torch.set_grad_enabled(self.config.train_text_encoder and torch.is_grad_enabled()):
            for name, tokenizer in zip(self.text_encoder_names, self.tokenizers()):
                encoder = self.runners[name]
                ids = tokenize(tokenizer, captions, self.config.max_token_length)
                window = tokenizer.model_max_length
                output = encoder(ids.reshape(-1, window).to(self.components[name].device), output_hidden_states=True)
                hidden.append(splice_windows(output.hidden_states[HIDDEN_LAYER], len(captions)))
                if hasattr(output, "text_embeds"):
                    pooled = output.text_embeds.reshape(len(captions), -1, output.text_embeds.shape[-1])[:, 0]
        return {"hidden": torch.cat(hidden, dim=-1), "pooled": pooled}

    def text_cache_stamp(self) -> dict[str, str]:
        stamp = super().text_cache_stamp()
        stamp.pop("clip_skip")
        return stamp

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, data: dict) -> torch.Tensor:
        added = {"text_embeds": cond["pooled"].to(noisy.device), "time_ids": data["size_cond"].to(noisy.device)}
        return self.runners["unet"](noisy, timesteps, cond["hidden"].to(noisy.device),
                                    added_cond_kwargs=added).sample

    # --- previews -----------------------------------------------------------------------------------------
    @classmethod
    def assemble(cls, components: dict[str, Any]) -> StableDiffusionXLPipeline:
        return StableDiffusionXLPipeline(**components)

    def pipeline_extras(self, cond: Conditioning, uncond: Conditioning, spec) -> dict[str, Any]:
        device = self.denoiser.device
        size = (spec.height, spec.width)  # previews condition on an uncropped image of their own size
        return {"pooled_prompt_embeds": cond["pooled"].to(device),
                "negative_pooled_prompt_embeds": uncond["pooled"].to(device),
                "original_size": size, "target_size": size, "crops_coords_top_left": (0, 0)}


# ResnetBlock2D's layers under their original (SGM) names
SGM_RESNET_NAMES = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                    "conv_shortcut": "skip_connection"}
SGM_MIDDLE = {"resnets.0": "0", "attentions.0": "1", "resnets.1": "2"}


def attention_up_blocks(up_block_types: list[str]) -> set[int]:
    return {index for index, kind in enumerate(up_block_types) if "CrossAttn" in kind}


def ldm_unet_rename(layers_per_block: int, attention_up: set[int] = frozenset()) -> Rename:
    """diffusers UNet paths -> the original (SGM) block numbering kohya's SDXL LoRA names use (L = layers_per_block):
    down_blocks.i.{resnets,attentions}.j -> input_blocks.(1 + i*(L+1) + j).{0,1}, down_blocks.i.downsamplers.0.conv
    -> input_blocks.((i+1)*(L+1)).0.op, mid_block.{resnets.0,attentions.0,resnets.1} -> middle_block.{0,1,2},
    up_blocks.i.{resnets,attentions}.j -> output_blocks.(i*(L+1) + j).{0,1}, up_blocks.i.upsamplers.0.conv ->
    output_blocks.(i*(L+1) + L).{2 after attention, else 1}.conv; ResNet layers take their SGM names
    (diffusers' _maybe_map_sgm_blocks_to_diffusers reads them back)."""
    per = layers_per_block + 1

    def rename(path: str) -> str:
        match = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", path)
        if match:
            kind, block, inner, layer, rest = match.groups()
            index = (1 + int(block) * per if kind == "down_blocks" else int(block) * per) + int(layer)
            sub = "1" if inner == "attentions" else "0"
            rest = SGM_RESNET_NAMES.get(rest, rest) if inner == "resnets" else rest
            return f"{'input_blocks' if kind == 'down_blocks' else 'output_blocks'}.{index}.{sub}.{rest}"
        match = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv$", path)
        if match:
            return f"input_blocks.{(int(match.group(1)) + 1) * per}.0.op"
        match = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv$", path)
        if match:
            block = int(match.group(1))
            return f"output_blocks.{block * per + layers_per_block}.{2 if block in attention_up else 1}.conv"
        match = re.match(r"mid_block\.(resnets\.\d|attentions\.0)\.(.*)", path)
        if match:
            inner, rest = match.groups()
            rest = SGM_RESNET_NAMES.get(rest, rest) if inner.startswith("resnets") else rest
            return f"middle_block.{SGM_MIDDLE[inner]}.{rest}"
        return path

    return rename

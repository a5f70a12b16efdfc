"""fp8_base: the frozen weights of a model stored in float8 and cast per layer to the compute precision."""

from __future__ import annotations

import torch
from diffusers.hooks import apply_layerwise_casting
from diffusers.hooks.layerwise_casting import apply_layerwise_casting_hook
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

# Real normalisation layers, which fp8_base leaves in the compute precision (their weights are tiny).
NORM_LAYERS = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm, torch.nn.modules.batchnorm._NormBase)
# Token and position embeddings stay too (as in sd-scripts): a lookup gains nothing from float8 but its rounding.
KEPT = NORM_LAYERS + (torch.nn.Embedding,)
# Modules whose forward casts its activations to a child's weight dtype (T5's feed-forward, to `wo`'s): cast as a
# whole, so that their weights are already in the compute precision when the forward looks (sd-scripts patches
# that forward instead).
CAST_WHOLE = (T5DenseActDense, T5DenseGatedActDense)


def store_in_fp8(model: torch.nn.Module, compute_dtype: torch.dtype) -> str:
    """Every Linear and conv weight of the frozen `model` stored in float8 and cast per layer to the compute
    precision (diffusers' layerwise casting); done before LoRA so the LoRA layers stay in full precision.
    Normalisation and embedding layers are left out by type: diffusers' default skips every module named
    "*norm*", which keeps Flux's modulation linears (norm1.linear, ...), a quarter of its weights, in bf16.
    Returns a log line."""
    apply_layerwise_casting(model, torch.float8_e4m3fn, compute_dtype, skip_modules_pattern=None,
                            skip_modules_classes=KEPT + CAST_WHOLE)
    for module in model.modules():
        if isinstance(module, CAST_WHOLE):
            apply_layerwise_casting_hook(module, torch.float8_e4m3fn, compute_dtype, non_blocking=False)
    stored = [p for p in model.parameters() if p.dtype == torch.float8_e4m3fn]
    size = sum(p.numel() for p in stored) / 2 ** 30
    return f"{len(stored)} weight tensors ({size:.2f} G values) stored in float8"

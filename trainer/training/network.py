"""The trained network on a loaded model: the config's network type injected into the trained parts, its weights
in their training precision, and continued exactly from network_weights when the config names a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.adapters.layers import add_network
from trainer.adapters.spec import NetworkShape
from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.families.base import AdapterPart, ModelFamily
from trainer.run.events import RunLog
from trainer.training.export import load_lora


@dataclass(frozen=True)
class Network:
    parts: list[AdapterPart]  # the trained parts, in optimizer-group order
    alpha: float
    groups: list[dict]  # the optimizer's parameter groups: name, lr, params


def inject_network(config: TrainConfig, model: ModelFamily, dtype: torch.dtype, log: RunLog) -> Network:
    """Freeze the model, add the network to its trained parts in `dtype` and load network_weights into it."""
    for part in [model.denoiser, *model.text_encoders]:
        part.requires_grad_(False).eval()
    weights = load_lora(Path(config.network_weights).expanduser())[0] if config.network_weights else None
    file_shape = model.network_file_shape(weights) if weights is not None else None
    dim, alpha = _network_shape(config, file_shape)
    parts = model.trained_parts()
    kind = NETWORK_TYPES[config.network_type]
    shape = NetworkShape(kind, dim, alpha, config.conv_dim_value, config.conv_alpha_value, kind.peft_options(config))
    groups = [{"name": part.name, "lr": part.lr,
               "params": add_network(part.module, shape, part.targets, part.conv_targets)} for part in parts]
    for part in parts:  # the type's hooks: kohya's dropouts on LoRA layers, DyLoRA's rank draw
        kind.after_injection(part.module, config)
    # Trained weights stay fp32 under a half-precision, fp8 or quantized base, unless full_fp16/full_bf16 asks
    # otherwise; cast before a file is loaded into them, or its values would pass through the base's dtype.
    for group in groups:
        for param in group["params"]:
            param.data = param.data.to(dtype)
    if weights is not None:
        _load_network_weights(config, model, weights, alpha, file_shape, log)
    for part in parts:
        part.module.train()
        if config.mixed_precision != "no":
            _leave_inputs_to_autocast(part.module)
    return Network(parts, alpha, groups)


def _leave_inputs_to_autocast(module: torch.nn.Module) -> None:
    """Under mixed precision the loop runs the model in autocast, which computes each adapter matmul in the half
    dtype whatever its input's: peft's cast of every input to the fp32 adapter weights' dtype would only copy the
    activations once more per layer (the values are the same: half -> fp32 -> half is exact)."""
    for layer in module.modules():
        if hasattr(layer, "cast_input_dtype_enabled"):  # peft's adapter layers (LoRA, LoHa, LoKr, ...)
            layer.cast_input_dtype_enabled = False


def _network_shape(config: TrainConfig, file_shape: tuple[int, float] | None) -> tuple[int, float]:
    """(dim, alpha) from the config, or from the network_weights file with dim_from_weights."""
    if not config.network_weights or not config.dim_from_weights:
        return config.network_dim, config.network_alpha
    if file_shape is None:
        raise UserError(f"network_weights: '{config.network_weights}' holds no lora_down weights",
                        "pick a kohya-format LoRA file",
                        zh=f"network_weights：'{config.network_weights}' 里没有 lora_down 权重",
                        hint_zh="请选 kohya 格式的 LoRA 文件")
    return file_shape


def _load_network_weights(config: TrainConfig, model: ModelFamily, weights: dict[str, torch.Tensor], alpha: float,
                          file_shape: tuple[int, float] | None, log: RunLog) -> None:
    file_alpha = file_shape[1] if file_shape else alpha
    if file_alpha != alpha:
        raise UserError(f"network_alpha: {alpha:g} differs from the alpha {file_alpha:g} in network_weights",
                        "set network_alpha to the file's value, or dim_from_weights: true",
                        zh=f"network_alpha：{alpha:g} 与 network_weights 文件里的 alpha {file_alpha:g} 不同",
                        hint_zh="请把 network_alpha 设为文件里的值，或设 dim_from_weights: true")
    try:
        used = model.load_network_weights(weights)
    except RuntimeError as exc:  # peft reports rank mismatches as size mismatches
        raise UserError(f"network_weights: the file's rank differs from network_dim {config.network_dim}: "
                        f"{str(exc).splitlines()[-1].strip()}", "set dim_from_weights: true",
                        zh=f"network_weights：文件的 rank 与 network_dim {config.network_dim} 不同："
                        f"{str(exc).splitlines()[-1].strip()}", hint_zh="请设 dim_from_weights: true") from None
    if not used:
        raise UserError(f"network_weights: no key of '{config.network_weights}' matches this model's LoRA layers",
                        "pick a LoRA trained for this model family and network type",
                        zh=f"network_weights：'{config.network_weights}' 里没有一个键对得上这个模型的 LoRA 层",
                        hint_zh="请选为这类模型和这种网络类型训练的 LoRA")
    unused = sorted(set(weights) - used)
    if unused:
        log.warning(f"network_weights: {len(unused)} keys of the file were not used, e.g. {unused[0]}")
    log.info(f"network_weights: continued from {config.network_weights}")

"""quantize_base: store the frozen denoiser's linear layers in 8 or 4 bits before the LoRA layers wrap them.

int8 is torchao's weight-only int8 (per output channel scales; the matmul runs in the compute precision on a
dequantized weight), nf4 is bitsandbytes' 4-bit NormalFloat as used by QLoRA. peft wraps both with its own LoRA
layers (TorchaoLoraLinear, bnb Linear4bit), so the LoRA weights stay in full precision and train as usual.
Only nn.Linear layers are quantized: SD's few convolutions stay as they are.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

import torch

from trainer.common.errors import Problem

# Bytes per stored weight for each choice of the schema's quantize_base (scales left out: well under 1%).
BYTES_PER_WEIGHT = {"int8": 1.0, "nf4": 0.5}


def quantize_problems(choice: str) -> list[Problem]:
    """What keeps this machine from the chosen quantization (empty when it works)."""
    if choice == "int8" and importlib.util.find_spec("torchao") is None:
        return [Problem(("quantize_base",), "'int8' needs the torchao package: pip install torchao==0.18.0 "
                        "(or use 'nf4')", zh="'int8' 需要安装 torchao：pip install torchao==0.18.0（或改用 'nf4'）")]
    if choice == "nf4":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:  # bitsandbytes 0.50 has 4-bit kernels for CUDA and the CPU; probe the one training will use
            _nf4_linear(torch.nn.Linear(64, 64), torch.float32, device)
        except Exception as error:  # noqa: BLE001 - any failure means no 4-bit here; the message says why
            return [Problem(("quantize_base",), f"'nf4' does not work on this machine ({type(error).__name__}: "
                            f"{error})", "use 'int8' or 'none'",
                            zh=f"'nf4' 在这台机器上用不了（{type(error).__name__}：{error}）",
                            hint_zh="请用 'int8' 或 'none'")]
    return []


def quantize_linear_layers(model: torch.nn.Module, choice: str, compute_dtype: torch.dtype) -> str:
    """Quantize every nn.Linear of the (frozen, already placed) model in place; returns a line for the log."""
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    weights = sum(m.weight.numel() for m in linears)
    before = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    if choice == "int8":
        _quantize_int8(model)
    elif choice == "nf4":
        _quantize_nf4(model, compute_dtype)
    else:
        raise ValueError(f"quantize_base: unknown choice {choice!r}")
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear) and type(layer.weight) is not torch.nn.Parameter:  # quantized
            layer.register_forward_pre_hook(_follow_autocast)
    after = weights * BYTES_PER_WEIGHT[choice]
    return (f"quantize_base: {len(linears)} linear layers ({weights / 1e6:.2f} M weights) stored as {choice}, "
            f"{before / 2 ** 20:.2f} MiB -> about {after / 2 ** 20:.2f} MiB")


def _quantize_int8(model: torch.nn.Module) -> None:
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it warns about CUDA-only kernels it cannot load
    # peft warns that its torchao LoRA layers cannot merge into the base; the LoRA is only ever saved apart.
    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: type(m) is torch.nn.Linear)


def _follow_autocast(module: torch.nn.Module, inputs: tuple) -> tuple:
    """Cast the input to the autocast dtype, as autocast does for a plain Linear: a quantized weight's own
    linear bypasses autocast, and a float32 output then meets bf16/fp16 layers (e.g. GroupNorm) and fails."""
    device = inputs[0].device.type
    if not torch.is_autocast_enabled(device):
        return inputs
    return (inputs[0].to(torch.get_autocast_dtype(device)), *inputs[1:])


def _quantize_nf4(model: torch.nn.Module, compute_dtype: torch.dtype) -> None:
    parents = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear]
    for parent, name, child in parents:
        setattr(parent, name, _nf4_linear(child, compute_dtype, child.weight.device))
    # peft picks its bnb 4-bit LoRA layer only for a model flagged like this (as diffusers' bnb loader does).
    model.is_loaded_in_4bit = True


def _nf4_linear(linear: torch.nn.Linear, compute_dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    import bitsandbytes as bnb

    quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", device="meta")
    # Params4bit quantizes when moved to the device; it needs the weight on the CPU first.
    quantized.weight = bnb.nn.Params4bit(linear.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        quantized.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
    return quantized.to(device)

"""quantize_base: store the frozen denoiser's linear layers in 8 or 4 bits before the LoRA layers wrap them.

int8 is torchao's weight-only int8 (per output channel scales; the matmul runs in the compute precision on a
dequantized weight), nf4 is bitsandbytes' 4-bit NormalFloat as used by QLoRA. peft wraps both with its own LoRA
layers (TorchaoLoraLinear, bnb Linear4bit), so the LoRA weights stay in full precision and train as usual.
Only nn.Linear layers are quantized: SD's few convolutions stay as they are.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

# Bytes per stored weight for each choice of the schema's quantize_base (scales left out: well under 1%).
BYTES_PER_WEIGHT = {"int8": 1.0, "nf4": 0.5}


def quantize_problems(choice: str, device: torch.device | None = None) -> list[str]:
    """What keeps this machine from the chosen quantization, as user-facing lines (empty when it works)."""
    if choice == "int8" and importlib.util.find_spec("torchao") is None:
        return ["quantize_base: 'int8' needs the torchao package: pip install torchao==0.18.0 (or use 'nf4')"]
    if choice == "nf4":
        device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:  # bitsandbytes' 4-bit kernels exist for CUDA and (since 0.48) the CPU; probe the one we will use
            _nf4_linear(torch.nn.Linear(64, 64), torch.float32, device)
        except Exception as error:  # noqa: BLE001 - any failure means no 4-bit here; the message says why
            return [f"quantize_base: 'nf4' does not work on this machine ({type(error).__name__}: {error}); "
                    "use 'int8' or 'none'"]
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
    after = weights * BYTES_PER_WEIGHT[choice]
    return (f"quantize_base: {len(linears)} linear layers ({weights / 1e6:.1f} M weights) stored as {choice}, "
            f"{before / 2 ** 20:.1f} MiB -> about {after / 2 ** 20:.1f} MiB")


def _quantize_int8(model: torch.nn.Module) -> None:
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it warns about CUDA-only kernels it cannot load
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: type(m) is torch.nn.Linear)


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

"""quantize_base: the frozen UNet quantized before LoRA injection (int8 via torchao, nf4 via bitsandbytes)."""

import re

import numpy as np
import pytest
import safetensors
import torch
from conftest import only_run_dir, read_events, run_cli, write_config
from diffusers import UNet2DConditionModel
from lora_helpers import add_lora
from peft.tuners.lora import LoraLayer

from trainer.config.schema.steps import StepsFields
from trainer.families.sd import UNET_TARGETS
from trainer.training import quantize
from trainer.training.quantize import quantize_linear_layers, quantize_problems


@pytest.mark.parametrize("choice", ["int8", "nf4"])
def test_cli_training_on_a_quantized_base_saves_a_normal_kohya_lora(tmp_path, make_config, choice):
    # bf16: the quantized layers must give what autocast gives a plain Linear, or the next GroupNorm fails.
    config = make_config(quantize_base=choice, max_train_steps=2, mixed_precision="bf16")
    result = run_cli("train", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = only_run_dir(tmp_path / "out")
    assert re.search(rf"quantize_base: [1-9]\d* linear layers .* stored as {choice}",
                     (run_dir / "train.log").read_text(encoding="utf-8"))
    assert all(np.isfinite(e["loss"]) for e in read_events(run_dir) if e["type"] == "step")
    with safetensors.safe_open(str(tmp_path / "out" / "test.safetensors"), "pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
    block = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1"
    assert {f"{block}_to_q.lora_down.weight", f"{block}_to_q.lora_up.weight", f"{block}_to_q.alpha"} <= keys
    assert not any("base_layer" in key or "weight_scale" in key for key in keys)
    assert meta["ss_quantize_base"] == choice


@pytest.fixture(scope="module")
def unet_and_input(tiny_sd1):
    unet = UNet2DConditionModel.from_pretrained(tiny_sd1 / "unet").requires_grad_(False).eval()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, unet.config.in_channels, 8, 8, generator=generator)
    context = torch.randn(2, 4, unet.config.cross_attention_dim, generator=generator)
    return unet, (latents, torch.tensor([10, 500]), context)


# Relative error bound of the UNet output: int8 weight-only is close to exact; nf4 keeps 16 levels per weight.
@pytest.mark.parametrize("choice, bound", [("int8", 0.02), ("nf4", 0.2)])
def test_quantized_unet_stays_close_and_its_lora_gets_gradients(unet_and_input, choice, bound):
    unet, inputs = unet_and_input
    with torch.no_grad():
        reference = unet(*inputs).sample
    model = UNet2DConditionModel.from_config(unet.config).requires_grad_(False).eval()
    model.load_state_dict(unet.state_dict())
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert f"{linears} linear layers" in quantize_linear_layers(model, choice, torch.float32)
    assert not any(isinstance(m, torch.nn.Linear) and type(m.weight) is torch.nn.Parameter for m in model.modules())
    with torch.no_grad():
        error = (model(*inputs).sample - reference).norm() / reference.norm()
    assert 0 < error < bound

    params = add_lora(model, UNET_TARGETS, dim=4, alpha=4)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert sum(type(layer).__name__ in ("TorchaoLoraLinear", "Linear4bit") for layer in layers) >= 8
    model(*inputs).sample.square().mean().backward()
    ups = [layer.lora_B["default"].weight for layer in layers]
    # lora_B starts at zero, so its gradient is the one that shows the signal reached every layer.
    assert all(up.grad is not None and up.grad.abs().sum() > 0 for up in ups)
    assert all(p.dtype == torch.float32 for p in params)


def test_fp8_base_with_quantize_base_is_refused(tmp_path, make_config):
    config = make_config(quantize_base="int8", fp8_base=True, mixed_precision="bf16")
    result = run_cli("check", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "fp8_base and quantize_base" in result.stdout + result.stderr


def test_a_machine_without_the_quantization_library_is_told_what_to_install(monkeypatch):
    assert quantize_problems("int8") == [] and quantize_problems("nf4") == []
    monkeypatch.setattr(quantize.importlib.util, "find_spec", lambda name: None)
    (problem,) = quantize_problems("int8")
    assert problem.keys == ("quantize_base",) and "pip install torchao" in str(problem)

    def broken(*args):
        raise RuntimeError("no 4-bit kernel")

    monkeypatch.setattr(quantize, "_nf4_linear", broken)
    (problem,) = map(str, quantize_problems("nf4"))
    assert problem.startswith("quantize_base: 'nf4'") and "no 4-bit kernel" in problem and "'int8'" in problem


def test_every_choice_but_none_has_a_size():
    choices = StepsFields.model_fields["quantize_base"].annotation.__args__
    assert set(choices) == {"none", *quantize.BYTES_PER_WEIGHT}

"""What waits in system RAM: blocks_to_swap (trainer/training/block_swap.py) and cpu_offload_checkpointing
(trainer/training/offload_checkpointing.py). On a CPU-only machine their code runs with the CPU as the device, so a
swapped or offloaded run must give exactly the LoRA of a plain one; what stays on the CPU is observed by placing
the denoiser on the meta device. The schema refuses blocks_to_swap for families without blocks to swap; the memory
estimate takes the swapped blocks off the denoiser's part."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tiny_flux import build_tiny_flux

from trainer.checks.memory import GIB, estimate, model_sizes
from trainer.checks.preflight import run_preflight
from trainer.common.errors import ConfigError, UserError
from trainer.config.io import validate_config
from trainer.families.registry import load_family
from trainer.run.events import RunLog
from trainer.training import offload_checkpointing
from trainer.training.loop import Trainer

BLOCKS_TO_SWAP = 2  # sd-scripts' split: 1 double block and 2 single ones, the last of each list


@pytest.fixture(scope="module")
def flux_four_singles(tmp_path_factory):
    """1 double and 4 single blocks: two single blocks stay on the device, two swap."""
    return build_tiny_flux(tmp_path_factory.mktemp("flux_swap") / "model", "dev", num_single_layers=4)


def train(tmp_path, make_config, model, name: str, **overrides) -> Trainer:
    AcceleratorState._reset_state(reset_partial_state=True)
    config = validate_config(make_config(pretrained_model_name_or_path=str(model), output_name=name,
                                         max_train_steps=2, train_batch_size=1, **overrides))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / name), Accelerator())
    trainer.setup()
    assert trainer.run() == "completed"
    trainer.log.close()
    return trainer


def test_a_swapped_run_trains_the_same_lora_and_keeps_the_swapped_weights_on_the_cpu(tmp_path, make_config,
                                                                                       flux_four_singles):
    plain = train(tmp_path, make_config, flux_four_singles, "plain")
    swapped = train(tmp_path, make_config, flux_four_singles, "swapped", blocks_to_swap=BLOCKS_TO_SWAP)
    AcceleratorState._reset_state(reset_partial_state=True)
    expected, got = plain.model.export_tensors(plain.alpha), swapped.model.export_tensors(swapped.alpha)
    assert got.keys() == expected.keys()
    assert [key for key in expected if not torch.allclose(got[key], expected[key], rtol=0, atol=1e-6)] == []
    swap = swapped.swap
    denoiser = swapped.model.denoiser
    assert [block.module for block in swap.blocks] == [denoiser.transformer_blocks[0],
                                                      *denoiser.single_transformer_blocks[2:]]
    # Each swapped block came to the device in the forward pass, and again in the backward pass (where the last
    # block, still there from the forward, is needed first).
    assert set(swap.loads) == {(0, "forward"), (1, "forward"), (2, "forward"), (0, "backward"), (1, "backward")}
    # Placed on a device, the swapped blocks' frozen weights stay on the CPU; their LoRA layers go with the rest.
    swap.place(torch.device("meta"))
    swapped_names = {"transformer_blocks.0.", "single_transformer_blocks.2.", "single_transformer_blocks.3."}
    where = {name: param.device.type for name, param in denoiser.named_parameters()}
    assert {name for name, device in where.items() if device == "cpu"} == {
        name for name, param in denoiser.named_parameters()
        if name.startswith(tuple(swapped_names)) and not param.requires_grad}
    assert any(".lora_" in name and name.startswith(tuple(swapped_names)) and device == "meta"
               for name, device in where.items())


def test_an_offloaded_checkpointing_run_trains_the_same_lora(tmp_path, make_config, tiny_flux, monkeypatch):
    plain = train(tmp_path, make_config, tiny_flux, "plain", gradient_checkpointing=True)
    calls = []
    checkpoint = offload_checkpointing.checkpoint
    monkeypatch.setattr(offload_checkpointing, "checkpoint", lambda *args, **kwargs: (
        calls.append([arg.device.type for arg in args[1:] if isinstance(arg, torch.Tensor)]),
        checkpoint(*args, **kwargs))[1])
    offloaded = train(tmp_path, make_config, tiny_flux, "offloaded", gradient_checkpointing=True,
                      cpu_offload_checkpointing=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    expected, got = plain.model.export_tensors(plain.alpha), offloaded.model.export_tensors(offloaded.alpha)
    assert [key for key in expected if not torch.allclose(got[key], expected[key], rtol=0, atol=1e-6)] == []
    # 2 steps x (1 double + 1 single block): each checkpointed with its tensor inputs stored on the CPU
    assert len(calls) == 4 and all(devices and set(devices) == {"cpu"} for devices in calls)


@pytest.mark.parametrize(("other", "why"), [({"gradient_checkpointing": False}, "turn on gradient_checkpointing"),
                                            ({"gradient_checkpointing": True, "blocks_to_swap": 4,
                                              "model_family": "flux"}, "cannot be combined")])
def test_cpu_offload_checkpointing_needs_checkpointing_and_no_swap(make_config, other, why):
    with pytest.raises(ConfigError) as caught:
        validate_config(make_config(cpu_offload_checkpointing=True, **other))
    [problem] = caught.value.problems
    assert problem.keys[0] == "cpu_offload_checkpointing" and why in str(problem)


@pytest.mark.parametrize(("other", "why"), [({"model_family": "sd1"}, "SD1.x has none to swap"),
                                            ({"model_family": "flux", "quantize_base": "int8"}, "use fp8_base")])
def test_blocks_to_swap_is_refused_without_blocks_or_with_a_quantized_base(make_config, other, why):
    with pytest.raises(ConfigError) as caught:
        validate_config(make_config(blocks_to_swap=4, **other))
    [problem] = caught.value.problems
    assert problem.keys[0] == "blocks_to_swap" and why in str(problem)


def test_the_estimate_takes_the_swapped_blocks_but_two_off_the_denoiser():
    blocks = model_sizes("flux")["transformer"]["blocks"]
    double, single = (blocks[name]["params"] // blocks[name]["count"]
                      for name in ("transformer_blocks", "single_transformer_blocks"))
    config = {"model_family": "flux", "mixed_precision": "bf16"}
    plain = estimate(validate_config(config)).part("denoiser").gib
    swapped = estimate(validate_config({**config, "blocks_to_swap": 18})).part("denoiser").gib
    # 18: 9 double and 18 single blocks swap; two double blocks are on the GPU at a time
    assert plain - swapped == pytest.approx((7 * double + 18 * single) * 2 / GIB)


def test_the_family_check_knows_how_many_blocks_the_model_has(make_config, flux_four_singles):
    config = validate_config(make_config(pretrained_model_name_or_path=str(flux_four_singles), blocks_to_swap=4))
    with pytest.raises(UserError, match=r"blocks_to_swap: 4 is more .* \(3; it has 1 transformer_blocks \+ 4 single"):
        load_family(config, torch.float32)

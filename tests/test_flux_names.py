"""Flux LoRA names: peft targets, kohya/ComfyUI export checked against diffusers' own kohya-Flux loader, and import."""

import copy

import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from lora_helpers import add_lora
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import T5Config, T5EncoderModel

from trainer.adapters.layers import ADAPTER, kohya_state_dict, lora_layers
from trainer.families.flux_names import (
    DOUBLE_BLOCK,
    FLUX_TARGETS,
    SINGLE_BLOCK,
    T5_PREFIX,
    T5_TARGETS,
    diffusers_flux_state_dict,
    kohya_flux_state_dict,
    peft_state_from_kohya_flux,
)

RANK, ALPHA = 4, 2.0


def tiny_transformer(num_single_layers: int = 1) -> FluxTransformer2DModel:
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=num_single_layers, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6)).eval()


def with_lora(model: FluxTransformer2DModel, seed: int = 1) -> FluxTransformer2DModel:
    """Inject LoRA with FLUX_TARGETS and give every B (zero after init) random values."""
    add_lora(model, FLUX_TARGETS, RANK, ALPHA)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for weight in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight):
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.3)
    return model


def run(model: FluxTransformer2DModel) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    batch, seq, txt = 2, 16, 8
    with torch.no_grad():
        return model(hidden_states=torch.randn(batch, seq, 64, generator=gen),
                     encoder_hidden_states=torch.randn(batch, txt, 32, generator=gen),
                     pooled_projections=torch.randn(batch, 32, generator=gen),
                     timestep=torch.tensor([0.3, 0.8]), img_ids=torch.rand(seq, 3, generator=gen),
                     txt_ids=torch.zeros(txt, 3), guidance=torch.full((batch,), 3.5)).sample


def peft_state(model) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def test_targets_are_exactly_the_attention_and_mlp_projections():
    model = with_lora(tiny_transformer(num_single_layers=2))
    double = {f"transformer_blocks.0.{p}" for parts in DOUBLE_BLOCK.values() for p in parts}
    single = {f"single_transformer_blocks.{i}.{p}" for i in range(2) for parts in SINGLE_BLOCK.values()
              for p in parts}
    assert set(lora_layers(model)) == double | single
    # Neither the model's final proj_out nor modulation or embedders (suffix matching would catch proj_out).
    assert "proj_out" not in lora_layers(model) and not any("norm" in n for n in lora_layers(model))


def test_kohya_file_loads_in_diffusers_with_the_same_output():
    trained = with_lora(tiny_transformer(num_single_layers=0))
    kohya = kohya_flux_state_dict(peft_state(trained), ALPHA)
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in kohya
    assert float(kohya["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 3 * ALPHA
    assert float(kohya["lora_unet_double_blocks_0_img_attn_proj.alpha"]) == ALPHA
    # diffusers' converter for kohya Flux files (lora_down keys), independent of our code.
    converted = FluxPipeline.lora_state_dict(copy.deepcopy(kohya))
    fresh = tiny_transformer(num_single_layers=0)
    FluxPipeline.load_lora_into_transformer(converted, None, fresh)
    assert torch.allclose(run(fresh), run(trained), atol=1e-4)
    assert not torch.allclose(run(tiny_transformer(num_single_layers=0)), run(trained), atol=1e-3)


def test_diffusers_layout_with_alpha_loads_with_the_same_output():
    trained = with_lora(tiny_transformer(num_single_layers=1))
    state, alphas = FluxPipeline.lora_state_dict(diffusers_flux_state_dict(peft_state(trained), ALPHA),
                                                 return_alphas=True)
    assert alphas  # alpha != rank: without the .alpha keys the output would differ
    fresh = tiny_transformer(num_single_layers=1)
    FluxPipeline.load_lora_into_transformer(state, alphas, fresh)
    assert torch.allclose(run(fresh), run(trained), atol=1e-4)


def delta(kohya: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    down, up = kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"]
    return up @ down * float(kohya[f"{name}.alpha"]) / down.shape[0]


@pytest.mark.parametrize(("block", "suffix", "paths"), [
    *[("double_blocks", s, [f"transformer_blocks.0.{p}" for p in ps]) for s, ps in DOUBLE_BLOCK.items()],
    *[("single_blocks", s, [f"single_transformer_blocks.0.{p}" for p in ps]) for s, ps in SINGLE_BLOCK.items()],
])
def test_every_kohya_module_applies_the_peft_update(block, suffix, paths):
    trained = with_lora(tiny_transformer())
    kohya = kohya_flux_state_dict(peft_state(trained), ALPHA)
    layers = lora_layers(trained)
    expected = torch.cat([layers[p].get_delta_weight(ADAPTER) for p in paths], 0)
    assert torch.allclose(delta(kohya, f"lora_unet_{block}_0_{suffix}"), expected, atol=1e-6)


def test_round_trip_kohya_peft_kohya_is_identical():
    trained = with_lora(tiny_transformer())
    kohya = kohya_flux_state_dict(peft_state(trained), ALPHA)
    state, used = peft_state_from_kohya_flux({**kohya, "lora_te1_x.alpha": torch.tensor(1.0)}, RANK, ALPHA)
    assert used == set(kohya)
    again = kohya_flux_state_dict(state, ALPHA)
    assert again.keys() == kohya.keys() and all(torch.equal(again[k], kohya[k]) for k in kohya)
    fresh = with_lora(tiny_transformer(), seed=9)
    set_peft_model_state_dict(fresh, state, adapter_name=ADAPTER)
    assert torch.equal(run(fresh), run(trained))


def test_dense_sd_scripts_fused_lora_is_continued_exactly_with_its_alpha():
    """sd-scripts' default Flux LoRA: one rank-r LoRA on the fused qkv, dense lora_up, its own alpha."""
    gen = torch.Generator().manual_seed(3)
    name = "lora_unet_single_blocks_0_linear1"
    down, up = torch.randn(RANK, 32, generator=gen), torch.randn(3 * 32 + 128, RANK, generator=gen)
    kohya = {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(8.0)}
    state, _ = peft_state_from_kohya_flux(kohya, RANK, ALPHA)
    model = with_lora(tiny_transformer(num_single_layers=1))
    set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    layers = lora_layers(model)
    parts = [layers[f"single_transformer_blocks.0.{p}"].get_delta_weight(ADAPTER) for p in SINGLE_BLOCK["linear1"]]
    assert torch.allclose(torch.cat(parts, 0), up @ down * 8.0 / RANK, atol=1e-5)


def test_fused_lora_that_does_not_fit_the_rank_is_refused():
    trained = with_lora(tiny_transformer())
    kohya = kohya_flux_state_dict(peft_state(trained), ALPHA)
    name = "lora_unet_double_blocks_0_img_attn_qkv"
    dense = dict(kohya, **{f"{name}.lora_up.weight": torch.ones_like(kohya[f"{name}.lora_up.weight"])})
    with pytest.raises(ValueError, match=f"{name} is a fused LoRA of rank 12 that is not block-diagonal"):
        peft_state_from_kohya_flux(dense, RANK, ALPHA)
    with pytest.raises(ValueError, match="lora_unet_double_blocks_0_img_attn_proj has rank 4, but network_dim is 8"):
        peft_state_from_kohya_flux(kohya, 8, ALPHA)


def test_partial_fused_module_is_refused():
    model = tiny_transformer(num_single_layers=0)
    add_lora(model, ["transformer_blocks.0.attn.to_q"], RANK, ALPHA)
    with pytest.raises(ValueError, match="img_attn_qkv needs all of them"):
        kohya_flux_state_dict(peft_state(model), ALPHA)


def test_t5_targets_give_sd_scripts_names():
    config = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      feed_forward_proj="gated-gelu")
    t5 = T5EncoderModel(config)
    add_lora(t5, T5_TARGETS, RANK, ALPHA)
    names = {k.split(".")[0] for k in kohya_state_dict(t5, T5_PREFIX, ALPHA)}
    layer = "lora_te3_encoder_block_0_layer"
    assert names == {f"{layer}_0_SelfAttention_{x}" for x in "qkvo"} | {
        f"{layer}_1_DenseReluDense_{x}" for x in ("wi_0", "wi_1", "wo")}

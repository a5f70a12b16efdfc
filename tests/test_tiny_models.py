"""Tiny SD pipelines and the demo dataset: they must load like a user's model folder, offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers read it

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, FluxPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image
from tiny_flux import build_t5_tokenizer, build_tiny_flux
from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5Tokenizer

from trainer.demo.data import build_demo_dataset, demo_prompts
from trainer.families.tiny_sd import (
    CROSS_ATTENTION_DIM,
    SDXL_PROJECTION_DIM,
    SDXL_TEXT_DIMS,
    build_tiny_sd,
    build_tokenizer,
    write_clip_bpe_files,
)

PROMPT = "a red circle, on blue background"
LORA_TARGETS = ("attn1.to_q", "attn2.to_k", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")


@pytest.fixture(scope="module", params=["sd1", "sd2v"])
def tiny(request, tmp_path_factory) -> tuple[str, Path, StableDiffusionPipeline]:
    path = build_tiny_sd(tmp_path_factory.mktemp(request.param) / "model", request.param)
    return request.param, path, StableDiffusionPipeline.from_pretrained(path)


def test_folder_layout(tiny):
    _, path, _ = tiny
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).is_dir(), sub
    assert (path / "model_index.json").is_file()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 10_000_000


def test_inference_is_finite(tiny):
    _, _, pipe = tiny
    images = pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()


def test_variant_shapes(tiny):
    variant, path, pipe = tiny
    sd2 = variant == "sd2v"
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if sd2 else "epsilon")
    # What a trainer loads for training from the same folder.
    ddpm = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    assert ddpm.config.prediction_type == pipe.scheduler.config.prediction_type
    assert ddpm.config.clip_sample is False
    assert pipe.vae_scale_factor == 8
    assert pipe.vae.config.scaling_factor == 0.18215
    assert pipe.unet.config.cross_attention_dim == CROSS_ATTENTION_DIM[variant]
    assert pipe.text_encoder.config.hidden_size == CROSS_ATTENTION_DIM[variant]
    assert pipe.text_encoder.config.hidden_act == ("gelu" if sd2 else "quick_gelu")
    assert pipe.unet.config.use_linear_projection is sd2
    assert isinstance(pipe.unet.config.attention_head_dim, list) is sd2
    assert CROSS_ATTENTION_DIM["sd1"] != CROSS_ATTENTION_DIM["sd2v"]


def test_lora_target_modules_exist(tiny):
    _, _, pipe = tiny
    names = [name for name, _ in pipe.unet.named_modules()]
    for target in LORA_TARGETS:
        assert any(name.endswith(target) for name in names), target


def test_tokenizer_survives_save_and_load(tiny, tmp_path):
    variant, path, pipe = tiny
    # The tokenizer made from the hand-written vocab.json/merges.txt, before any save.
    fresh = build_tokenizer(variant)
    expected = fresh(PROMPT).input_ids
    assert pipe.tokenizer(PROMPT).input_ids == expected
    assert AutoTokenizer.from_pretrained(path / "tokenizer")(PROMPT).input_ids == expected
    assert pipe.tokenizer.convert_ids_to_tokens(expected[1:4]) == ["a</w>", "red</w>", "circle</w>"]
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer.pad_token == ("!" if variant == "sd2v" else "<|endoftext|>")
    assert pipe.tokenizer.eos_token_id == len(pipe.tokenizer) - 1
    # Words outside the merge list still tokenize, byte by byte, never to the unknown token.
    assert pipe.tokenizer.unk_token_id not in pipe.tokenizer("zqxj 丹炉").input_ids[1:-1]
    assert len(pipe.tokenizer(PROMPT, padding="max_length", max_length=77).input_ids) == 77
    files = write_clip_bpe_files(tmp_path)
    assert (files / "vocab.json").is_file() and (files / "merges.txt").read_text().startswith("#version")


def test_same_seed_same_weights(tmp_path):
    def unet_weights(folder: Path, seed: int) -> torch.Tensor:
        build_tiny_sd(folder, "sd1", seed=seed)
        return StableDiffusionPipeline.from_pretrained(folder).unet.conv_in.weight

    first = unet_weights(tmp_path / "a", 0)
    assert torch.equal(first, unet_weights(tmp_path / "b", 0))
    assert not torch.equal(first, unet_weights(tmp_path / "c", 1))


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sdxl"):
        build_tiny_sd(tmp_path, "sd3")
    with pytest.raises(ValueError, match="schnell"):
        build_tiny_flux(tmp_path, "pro")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)


def test_sdxl_inference_is_finite(sdxl):
    images = sdxl(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()


def test_sdxl_shapes(tiny_sdxl, sdxl):
    unet, te1, te2 = sdxl.unet, sdxl.text_encoder, sdxl.text_encoder_2
    assert folder_size(tiny_sdxl) < 10_000_000
    assert isinstance(te2, CLIPTextModelWithProjection)
    assert (te1.config.hidden_size, te2.config.hidden_size) == SDXL_TEXT_DIMS
    assert SDXL_TEXT_DIMS[0] != SDXL_TEXT_DIMS[1]
    assert unet.config.cross_attention_dim == CROSS_ATTENTION_DIM["sdxl"] == sum(SDXL_TEXT_DIMS)
    assert len(set(CROSS_ATTENTION_DIM.values())) == len(CROSS_ATTENTION_DIM)
    assert te2.config.projection_dim == SDXL_PROJECTION_DIM
    time_dim = unet.config.addition_time_embed_dim
    assert unet.add_embedding.linear_1.in_features == SDXL_PROJECTION_DIM + 6 * time_dim
    assert unet.config.addition_embed_type == "text_time"
    assert unet.config.layers_per_block == 2 and unet.config.use_linear_projection
    assert unet.config.down_block_types[0] == "DownBlock2D"
    assert te1.config.hidden_act == "quick_gelu" and te2.config.hidden_act == "gelu"
    assert (sdxl.tokenizer.pad_token, sdxl.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert sdxl.tokenizer_2.pad_token_id == 0
    assert sdxl.tokenizer(PROMPT).input_ids == sdxl.tokenizer_2(PROMPT).input_ids
    assert sdxl.vae.config.scaling_factor == 0.13025 and sdxl.vae_scale_factor == 8


def test_sdxl_scheduler(tiny_sdxl, sdxl):
    config = sdxl.scheduler.config
    assert type(sdxl.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (config.timestep_spacing, config.steps_offset, config.prediction_type) == ("leading", 1, "epsilon")
    ddpm = DDPMScheduler.from_pretrained(tiny_sdxl, subfolder="scheduler")
    assert ddpm.config.clip_sample is False and ddpm.config.prediction_type == "epsilon"
    assert ddpm.config.beta_schedule == "scaled_linear" and ddpm.config.num_train_timesteps == 1000


def test_sdxl_lora_target_modules_exist(sdxl):
    names = {name for name, _ in sdxl.unet.named_modules()}
    for target in LORA_TARGETS:
        assert any(name.endswith(target) for name in names), target
    # kohya's input_blocks_5_1 (2nd layer of the first attention level) and a 2nd transformer layer.
    assert "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k" in names
    assert "down_blocks.0.attentions.0.proj_in" not in names


def test_sdxl_kohya_block_numbering(tiny_sdxl):
    """kohya's SDXL LoRA names number LDM blocks (input_blocks.{1 + 3 * level + layer}); diffusers maps them
    back with layers_per_block, so they must land on the same modules as in the real SDXL."""
    expected = {
        "input_blocks_4_1_transformer_blocks_0_attn1_to_q":
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "input_blocks_8_1_transformer_blocks_1_attn2_to_k":
            "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k",
        "middle_block_1_transformer_blocks_1_ff_net_2": "mid_block.attentions.0.transformer_blocks.1.ff.net.2",
        "output_blocks_2_1_transformer_blocks_1_attn1_to_out_0":
            "up_blocks.0.attentions.2.transformer_blocks.1.attn1.to_out.0",
        "output_blocks_5_1_proj_out": "up_blocks.1.attentions.2.proj_out",
    }
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    modules = dict(pipe.unet.named_modules())
    lora = {}
    for kohya, target in expected.items():
        layer = modules[target]
        lora[f"lora_unet_{kohya}.lora_down.weight"] = torch.zeros(2, layer.in_features)
        lora[f"lora_unet_{kohya}.lora_up.weight"] = torch.zeros(layer.out_features, 2)
        lora[f"lora_unet_{kohya}.alpha"] = torch.tensor(1.0)
    pipe.load_lora_weights(lora)
    loaded = {name.removesuffix(".lora_A.default_0") for name, _ in pipe.unet.named_modules()
              if name.endswith(".lora_A.default_0")}
    assert loaded == set(expected.values())


@pytest.fixture(scope="module")
def flux_pipes(tiny_flux, tiny_flux_schnell) -> dict[str, FluxPipeline]:
    return {"dev": FluxPipeline.from_pretrained(tiny_flux), "schnell": FluxPipeline.from_pretrained(tiny_flux_schnell)}


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_flux_inference_is_finite(flux_pipes, variant):
    options = {"guidance_scale": 3.5} if variant == "dev" else {}
    pipe = flux_pipes[variant]
    images = pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np", **options).images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_flux_shapes(tiny_flux, tiny_flux_schnell, flux_pipes, variant):
    pipe = flux_pipes[variant]
    dev = variant == "dev"
    assert folder_size(tiny_flux if dev else tiny_flux_schnell) < 5_000_000
    config = pipe.transformer.config
    assert config.guidance_embeds is dev
    assert (config.num_layers, config.num_single_layers, config.in_channels) == (1, 1, 64)
    assert sum(config.axes_dims_rope) == config.attention_head_dim
    assert config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.hidden_size != pipe.text_encoder_2.config.d_model
    vae = pipe.vae.config
    assert (vae.latent_channels, vae.scaling_factor, vae.shift_factor) == (16, 0.3611, 0.1159)
    assert not vae.use_quant_conv and not vae.use_post_quant_conv and pipe.vae_scale_factor == 8
    scheduler = pipe.scheduler.config
    assert (scheduler.shift, scheduler.use_dynamic_shifting) == ((3.0, True) if dev else (1.0, False))
    assert (scheduler.base_shift, scheduler.max_shift) == (0.5, 1.15)
    assert (scheduler.base_image_seq_len, scheduler.max_image_seq_len) == (256, 4096)
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer.model_max_length == 77


def test_t5_tokenizer(flux_pipes, tmp_path):
    fresh = build_t5_tokenizer()
    ids = fresh("a red circle").input_ids
    assert fresh.convert_ids_to_tokens(ids) == ["▁a", "▁red", "▁circle", "</s>"]
    assert (fresh.pad_token_id, fresh.eos_token_id, fresh.unk_token_id) == (0, 1, 2)
    # Unlisted ASCII words are spelled out, never <unk>.
    assert fresh.unk_token_id not in fresh("zqxj, 42!").input_ids
    fresh.save_pretrained(tmp_path)
    for loaded in (T5Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path),
                   flux_pipes["dev"].tokenizer_2):
        assert loaded(PROMPT).input_ids == fresh(PROMPT).input_ids
        assert loaded.decode(loaded(PROMPT).input_ids, skip_special_tokens=True) == PROMPT
        assert loaded.model_max_length == 512 and len(loaded) == len(fresh)
    assert len(fresh) == flux_pipes["dev"].text_encoder_2.config.vocab_size


def test_flux_without_single_blocks(tmp_path):
    path = build_tiny_flux(tmp_path / "flux", "schnell", num_single_layers=0)
    pipe = FluxPipeline.from_pretrained(path)
    assert pipe.transformer.config.num_single_layers == 0 and len(pipe.transformer.single_transformer_blocks) == 0
    images = pipe(PROMPT, num_inference_steps=1, height=32, width=32, output_type="np").images
    assert np.isfinite(images).all()


def test_flux_same_seed_same_weights(tmp_path):
    def weights(folder: Path, seed: int) -> torch.Tensor:
        build_tiny_flux(folder, seed=seed)
        return FluxPipeline.from_pretrained(folder).transformer.x_embedder.weight

    first = weights(tmp_path / "a", 0)
    assert torch.equal(first, weights(tmp_path / "b", 0))
    assert not torch.equal(first, weights(tmp_path / "c", 1))


def test_demo_dataset(tmp_path):
    train_dir = build_demo_dataset(tmp_path)
    assert sorted(p.name for p in train_dir.iterdir()) == ["3_square", "5_circle"]
    images = sorted(train_dir.rglob("*.png"))
    assert len(images) == 10
    sizes = {Image.open(p).size for p in images}
    assert sizes == {(96, 96), (128, 96), (96, 128)}
    captions = {p.stem: p.read_text().strip() for p in train_dir.rglob("*.txt")}
    assert len(captions) == 8 and "circle_05" not in captions and "square_03" not in captions
    for stem, caption in captions.items():
        shape = stem.split("_")[0]
        assert caption.endswith(" background") and f" {shape}, on " in caption


def test_demo_dataset_is_deterministic(tmp_path):
    a, b, c = (build_demo_dataset(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))

    def content(root: Path) -> list[bytes]:
        return [p.read_bytes() for p in sorted(root.rglob("*.*"))]

    assert content(a) == content(b)
    assert content(a) != content(c)


def test_demo_prompts_use_sample_options():
    prompts = demo_prompts()
    assert len(prompts) == 2
    for prompt in prompts:
        assert "--w 64" in prompt and "--h 64" in prompt and "--s " in prompt

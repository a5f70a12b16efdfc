"""Tiny SD pipelines and the demo dataset: they must load like a user's model folder, offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers read it

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image
from transformers import AutoTokenizer

from trainer.demo_data import build_demo_dataset, demo_prompts
from trainer.tiny_models import CROSS_ATTENTION_DIM, build_tiny_sd, build_tokenizer, write_clip_bpe_files

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
        build_tiny_sd(tmp_path, "sdxl")


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

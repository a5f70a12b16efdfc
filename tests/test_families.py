"""SDXL and Flux.1 train end to end; their files load where users load them; family-specific options act."""

import re

import numpy as np
import pytest
import safetensors
import torch
import yaml
from accelerate import Accelerator
from conftest import only_run_dir, read_events, run_cli, write_config
from diffusers import FluxPipeline
from single_files import write_flux_files, write_ldm_checkpoint
from tiny_flux import build_tiny_flux

from trainer.checks.preflight import run_preflight
from trainer.common.errors import UserError
from trainer.config.io import validate_config
from trainer.dataset.plan import Entry
from trainer.dataset.scan import ImageItem
from trainer.dataset.stream import size_condition
from trainer.families.registry import load_family
from trainer.run.events import RunLog
from trainer.training.loop import Trainer


def train_in_process(tmp_path, config: dict, precision: str = "no") -> Trainer:
    config = validate_config(config)
    log = RunLog(tmp_path / "run")
    trainer = Trainer(config, run_preflight(config), log, Accelerator(mixed_precision=precision))
    trainer.setup()
    assert trainer.run() == "completed"
    log.close()
    return trainer


def lora_keys(path) -> tuple[set[str], dict[str, str]]:
    with safetensors.safe_open(str(path), "pt") as handle:
        return set(handle.keys()), handle.metadata()


def test_sdxl_trains_both_text_encoders_with_their_own_rates(tmp_path, make_config, tiny_sdxl):
    config = make_config(pretrained_model_name_or_path=str(tiny_sdxl), max_train_steps=2, unet_lr=1e-3,
                         text_encoder_lr=[4e-4, 2e-4], lr_scheduler="constant")
    result = run_cli("train", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [e for e in read_events(only_run_dir(tmp_path / "out")) if e["type"] == "step"]
    assert steps[0]["lrs"] == {"unet": 1e-3, "text_encoder": 4e-4, "text_encoder_2": 2e-4}
    keys, meta = lora_keys(tmp_path / "out" / "test.safetensors")
    assert {key.split("_text_model")[0] for key in keys if key.startswith("lora_te")} == {"lora_te1", "lora_te2"}
    # kohya's SDXL names number the UNet blocks as the original model does (what A1111/ComfyUI read)
    assert any(key.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") for key in keys)
    assert not any("down_blocks" in key for key in keys)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_text_encoder_lr"] == "[0.0004, 0.0002]"


def test_sdxl_size_conditioning_reaches_the_unet(make_config, tiny_sdxl):
    family = load_family(validate_config(make_config(pretrained_model_name_or_path=str(tiny_sdxl))), torch.float32)
    entry = Entry(ImageItem(path=None, caption="", has_caption_file=False, width=300, height=200), (96, 64), False)
    assert size_condition(entry, (0, 0)) == [200, 300, 0, 0, 64, 96]  # original (h, w), crop, target (h, w)
    with torch.no_grad():
        cond = family.encode_text(["red circle"])
        noisy = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([500])
        small = family.predict(noisy, t, cond, {"size_cond": torch.tensor([[64.0, 64, 0, 0, 64, 64]])})
        large = family.predict(noisy, t, cond, {"size_cond": torch.tensor([[1024.0, 1024, 0, 0, 64, 64]])})
    assert (small - large).abs().max() > 1e-4


@pytest.mark.parametrize("layout, key", [("kohya", "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"),
                                         ("diffusers", "transformer.transformer_blocks.0.attn.to_q.lora_A.weight")])
def test_flux_lora_reproduces_the_trained_model_in_diffusers(tmp_path, make_config, layout, key):
    # diffusers' kohya-Flux converter hard-codes Flux-dev's width for single blocks, so this tiny model has
    # none; tests/test_flux_names.py checks the single-block layout against peft's own deltas.
    model_path = build_tiny_flux(tmp_path / "flux", "dev", num_single_layers=0)
    trainer = train_in_process(tmp_path, make_config(pretrained_model_name_or_path=str(model_path),
                                                     learning_rate=5e-2, network_alpha=1.5,
                                                     save_lora_format=layout))
    file = tmp_path / "out" / "test.safetensors"
    keys, meta = lora_keys(file)
    assert key in keys
    assert not any(key.startswith("lora_te") for key in keys)  # Flux trains the transformer only by default
    assert meta["ss_base_model_version"] == "flux1" and meta["ss_network_module"] == "networks.lora_flux"
    family = trainer.model
    family.denoiser.eval()
    loaded = FluxPipeline.from_pretrained(model_path)
    before = _flux_image(loaded)
    loaded.load_lora_weights(str(file))
    expected, actual = _flux_image(family.pipeline("euler")), _flux_image(loaded)
    assert np.abs(expected - before).max() > 1e-3
    assert np.abs(expected - actual).max() <= 1e-4


def _flux_image(pipe) -> np.ndarray:
    with torch.no_grad():
        return pipe("red circle", num_inference_steps=2, height=64, width=64, guidance_scale=3.5,
                    max_sequence_length=32, output_type="np", generator=torch.Generator().manual_seed(0)).images


def test_flux_schnell_trains_clip_l_on_request_and_samples(tmp_path, make_config, tiny_flux_schnell):
    config = make_config(pretrained_model_name_or_path=str(tiny_flux_schnell), network_train_unet_only=False,
                         max_train_steps=2, sample_prompts=["red circle --w 64 --h 64 --s 2"], sample_every_n_steps=2,
                         timestep_sampling="flux_shift", model_prediction_type="raw")
    result = run_cli("train", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = only_run_dir(tmp_path / "out")
    events = read_events(run_dir)
    assert set(next(e for e in events if e["type"] == "step")["lrs"]) == {"transformer", "text_encoder"}
    assert [e for e in events if e["type"] == "sample"] and list((run_dir / "samples").glob("*.png"))
    keys, _ = lora_keys(tmp_path / "out" / "test.safetensors")
    assert any(key.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for key in keys)
    assert any(key.startswith("lora_unet_single_blocks_0_linear1") for key in keys)


def test_fp8_base_stores_the_frozen_transformer_in_float8(tmp_path, make_config, tiny_flux):
    config = make_config(pretrained_model_name_or_path=str(tiny_flux), fp8_base=True, mixed_precision="bf16",
                         max_train_steps=2)
    result = run_cli("train", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = only_run_dir(tmp_path / "out")
    log = (run_dir / "train.log").read_text()
    assert re.search(r"transformer: [1-9]\d* weight tensors \(.*\) stored in float8", log)
    assert all(np.isfinite(e["loss"]) for e in read_events(run_dir) if e["type"] == "step")
    keys, _ = lora_keys(tmp_path / "out" / "test.safetensors")
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in keys


@pytest.mark.parametrize("fixture, options", [("tiny_flux", {"apply_t5_attn_mask": True}),
                                              ("tiny_sdxl", {"max_token_length": 150})])
def test_cached_text_encoder_outputs_train_without_the_encoders(tmp_path, make_config, request, fixture, options):
    config = validate_config(make_config(pretrained_model_name_or_path=str(request.getfixturevalue(fixture)),
                                         max_train_steps=1, cache_text_encoder_outputs=True,
                                         sample_prompts=["red circle --w 64 --h 64 --s 1"], sample_at_first=True,
                                         **options))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "run"), Accelerator())
    trainer.setup()
    calls = []
    for encoder in trainer.model.text_encoders:
        encoder.register_forward_hook(lambda *args: calls.append(1))
    assert trainer.run() == "completed" and not calls
    trainer.log.close()


@pytest.mark.parametrize("fixture, overrides, words", [
    ("tiny_sdxl", {"model_family": "sd1"}, "model_family: set to sd1 (SD1.x), but"),
    ("tiny_flux", {"min_snr_gamma": 5}, "min_snr_gamma: does not apply to Flux.1"),
    ("tiny_sd1", {"t5xxl": "t5.safetensors"}, "t5xxl: only Flux.1 uses it"),
    ("tiny_sdxl", {"clip_skip": 2}, "clip_skip: SDXL always reads the penultimate layer"),
    ("tiny_sd1", {"network_module": "networks.lora_flux"}, "network_module: networks.lora_flux is for Flux.1"),
    ("tiny_flux", {"bucket_reso_steps": 8}, "Flux.1 packs 2x2 latent patches, so image sides must be multiples"),
])
def test_options_of_another_family_are_refused(request, make_config, fixture, overrides, words):
    config = validate_config(make_config(pretrained_model_name_or_path=str(request.getfixturevalue(fixture)),
                                         **overrides))
    with pytest.raises(UserError, match=re.escape(words)):
        load_family(config, torch.float32).prepare()


def test_single_file_checkpoints_train_from_the_cli(tmp_path, make_config, tiny_sdxl, tiny_flux):
    """An SDXL checkpoint in the original layout, and Flux split files as ComfyUI users keep them."""
    sdxl = write_ldm_checkpoint(tiny_sdxl, tmp_path / "sdxl.safetensors", "sdxl")
    flux = write_flux_files(tiny_flux, tmp_path / "flux")
    runs = {"sdxl": make_config(pretrained_model_name_or_path=str(sdxl), base_model_config=str(tiny_sdxl)),
            "flux": make_config(pretrained_model_name_or_path=str(flux["model"]), ae=str(flux["ae"]),
                                clip_l=str(flux["clip_l"]), t5xxl=str(flux["t5xxl"]), base_model_config=str(tiny_flux))}
    for name, config in runs.items():
        config.update(max_train_steps=1, output_dir=str(tmp_path / name))
        result = run_cli("train", write_config(tmp_path / f"{name}.yaml", config))
        assert result.returncode == 0, result.stderr[-2000:]
        resolved = yaml.safe_load((only_run_dir(tmp_path / name) / "config.yaml").read_text())
        assert resolved["model_family"] == name


def test_flux_training_continues_from_its_own_file(tmp_path, make_config, tiny_flux):
    """network_weights with dim_from_weights: the fused q/k/v and linear1 modules come back exactly."""
    train_in_process(tmp_path / "first", make_config(pretrained_model_name_or_path=str(tiny_flux),
                                                     output_dir=str(tmp_path / "first"), network_dim=4,
                                                     network_alpha=2, learning_rate=5e-2))
    file = tmp_path / "first" / "test.safetensors"
    config = validate_config(make_config(pretrained_model_name_or_path=str(tiny_flux), network_weights=str(file),
                                         dim_from_weights=True, network_dim=16, network_alpha=16,
                                         output_dir=str(tmp_path / "second")))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "second-run"), Accelerator())
    trainer.setup()
    trainer.log.close()
    assert (trainer.alpha, next(iter(trainer.parts)).module is trainer.model.denoiser) == (2.0, True)
    with safetensors.safe_open(str(file), "pt") as handle:
        saved = {key: handle.get_tensor(key) for key in handle.keys()}
    exported = trainer.model.export_tensors(trainer.alpha)
    assert exported.keys() == saved.keys()
    assert all(torch.allclose(exported[key], saved[key], atol=1e-6) for key in saved)

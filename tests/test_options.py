"""Options that change how training computes: each test fails if its option were ignored."""

import pytest
import safetensors
import torch
from accelerate import Accelerator
from conftest import read_events
from safetensors.torch import save_file

from trainer.checks.preflight import run_preflight
from trainer.config import SAMPLERS
from trainer.config.io import validate_config
from trainer.dataset.latents import LatentCache, cache_path
from trainer.families import sd
from trainer.families.registry import load_family
from trainer.run.events import RunLog
from trainer.training.export import load_lora
from trainer.training.loop import Trainer, train
from trainer.training.loss import training_loss
from trainer.training.sampling import load_prompts, make_sampler, parse_prompt_line


def lora_after(tmp_path, make_config, name, **overrides):
    train(validate_config(make_config(output_name=name, max_train_steps=3, **overrides)), tmp_path / name)
    return load_lora(tmp_path / "out" / f"{name}.safetensors")[0]


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_uncached_latents_and_loader_workers_train_on_the_same_data(tmp_path, make_config):
    lora_after(tmp_path, make_config, "cached")
    in_process = lora_after(tmp_path, make_config, "uncached", cache_latents=False)
    in_workers = lora_after(tmp_path, make_config, "workers", cache_latents=False, max_data_loader_n_workers=2)
    assert same(in_process, in_workers)
    # The VAE's float result varies ~1e-7 with batch composition, so compare the first loss, not Adam's output.
    first = [read_events(tmp_path / name)[1:] for name in ("cached", "uncached")]
    losses = [next(e["loss"] for e in events if e["type"] == "step") for events in first]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_gradient_checkpointing_is_on_and_exact(tmp_path, make_config):
    config = validate_config(make_config(gradient_checkpointing=True))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "r"), Accelerator())
    trainer.setup()
    assert trainer.model.denoiser.is_gradient_checkpointing
    assert trainer.model.text_encoder.is_activation_checkpointing
    trainer.log.close()
    plain = lora_after(tmp_path, make_config, "plain")
    checkpointed = lora_after(tmp_path, make_config, "ckpt", gradient_checkpointing=True)
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)


def test_max_grad_norm_clips(tmp_path, make_config):
    free = lora_after(tmp_path, make_config, "free", max_grad_norm=0)
    clipped = lora_after(tmp_path, make_config, "clipped", max_grad_norm=1e-9)
    assert not same(free, clipped)


def test_v_parameterization_overrides_the_model(tmp_path, make_config):
    config = validate_config(make_config(v_parameterization=True))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "r"), Accelerator())
    trainer.setup()
    trainer.log.close()
    scheduler = trainer.model.noise_scheduler
    latents, noise, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([500])
    assert torch.equal(sd.training_target(scheduler, latents, noise, t), scheduler.get_velocity(latents, noise, t))
    assert trainer.metadata["ss_v_parameterization"] == "True"
    assert "v_parameterization: true" in (tmp_path / "r" / "config.yaml").read_text()


def test_v2_must_match_the_model(tmp_path, make_config):
    with pytest.raises(Exception, match="v2: set to True"):
        train(validate_config(make_config(v2=True)), tmp_path / "r")
    assert read_events(tmp_path / "r")[-1]["status"] == "failed"


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(tiny_sd1):
    from transformers import CLIPTextModel, CLIPTokenizer

    encoder = CLIPTextModel.from_pretrained(tiny_sd1, subfolder="text_encoder")
    ids = sd.tokenize(CLIPTokenizer.from_pretrained(tiny_sd1, subfolder="tokenizer"), ["red circle"])
    with torch.no_grad():
        last, skipped = sd.encode_tokens(encoder, ids, 1), sd.encode_tokens(encoder, ids, 2)
        hidden = encoder(ids, output_hidden_states=True).hidden_states
        expected = encoder.final_layer_norm(hidden[-2])
    assert torch.allclose(skipped, expected) and not torch.allclose(last, skipped)


def test_clip_skip_deeper_than_the_model_is_an_error(tmp_path, make_config):
    with pytest.raises(Exception, match="clip_skip: 9 is more than"):
        train(validate_config(make_config(clip_skip=9)), tmp_path / "r")


def test_prior_loss_weight_scales_regularization_samples(tiny_sd1):
    from diffusers import DDPMScheduler

    from trainer.config import TrainConfig

    scheduler = DDPMScheduler.from_pretrained(tiny_sd1, subfolder="scheduler")
    prediction, target = torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)
    is_reg, timesteps = torch.tensor([False, True]), torch.tensor([10, 10])
    for weight, expected in ((1.0, 1.0), (0.5, 0.75)):
        config = TrainConfig(prior_loss_weight=weight)
        assert training_loss(config, scheduler, prediction, target, timesteps, is_reg) == pytest.approx(expected)


def test_regularization_images_join_the_plan(tmp_path, make_config):
    from trainer.demo.data import build_demo_dataset

    reg_dir = build_demo_dataset(tmp_path / "reg", seed=5)
    train(validate_config(make_config(reg_data_dir=str(reg_dir), max_train_steps=2)), tmp_path / "r")
    plan = read_events(tmp_path / "r")[0]
    assert plan["type"] == "plan" and plan["reg_images"] >= plan["images"] == 42


def test_disk_latent_cache_is_reused_and_invalidated(tmp_path, tiny_sd1, train_dir):
    import shutil

    from diffusers import AutoencoderKL

    from trainer.dataset.plan import Entry
    from trainer.dataset.scan import scan_dataset

    data = shutil.copytree(train_dir, tmp_path / "data")
    item = scan_dataset(data, None, ".txt").subsets[0].images[0]
    entry = Entry(item, (64, 64), False)
    vae = AutoencoderKL.from_pretrained(tiny_sd1, subfolder="vae")
    assert LatentCache(vae, to_disk=True).fill([entry]) == [1]
    assert cache_path(item.path).is_file()
    assert LatentCache(vae, to_disk=True).fill([entry]) == [0]  # reused from disk
    assert LatentCache(vae, to_disk=True).fill([Entry(item, (64, 48), False)]) == [1]  # other bucket
    item.path.write_bytes(item.path.read_bytes() + b"\0")  # the image changed
    assert LatentCache(vae, to_disk=True).fill([entry]) == [1]
    stamp = safetensors.safe_open(str(cache_path(item.path)), "pt").metadata()
    for bad in (torch.full((4, 8, 8), float("nan")), torch.zeros(4, 3, 3), torch.zeros(4, 8, 8, dtype=torch.float16)):
        save_file({"latent": bad}, str(cache_path(item.path)), stamp)  # its stamp matches, its tensor is unusable
        cache = LatentCache(vae, to_disk=True)
        assert cache.fill([entry]) == [1] and torch.isfinite(cache.get(entry)).all()
        assert LatentCache(vae, to_disk=True).fill([entry]) == [0]  # rebuilt on disk too
    with torch.no_grad():
        vae.encoder.conv_in.weight.add_(0.1)  # another VAE
    assert LatentCache(vae, to_disk=True).fill([entry]) == [1]


def test_every_sampler_makes_a_finite_preview(make_config):
    import numpy as np

    model = load_family(validate_config(make_config()), torch.float32)
    model.prepare()
    spec = parse_prompt_line("red circle --w 64 --h 64 --s 3 --d 1", (64, 64))
    with torch.no_grad():
        cond, uncond = model.encode_text([spec.prompt]), model.encode_text([spec.negative])
    for name in SAMPLERS:
        image = model.generate(spec, cond, uncond, 0, name)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8, name
        assert make_sampler(name, model.noise_scheduler.config).config.prediction_type == "epsilon"


def test_prompt_line_options(tmp_path):
    spec = parse_prompt_line("a cat, smiling --n blurry, lowres --w 640 --h 448 --s 12 --l 4.5 --d 42", (512, 512))
    assert (spec.prompt, spec.negative, spec.width, spec.height, spec.steps, spec.scale, spec.seed) == (
        "a cat, smiling", "blurry, lowres", 640, 448, 12, 4.5, 42)
    # sd-scripts' prompt files: --g is Flux's distilled guidance; options previews do not use are accepted
    flux = parse_prompt_line("a fox --g 4 --ss euler --fs 3.1 --ctr 0.25", (512, 512))
    assert (flux.prompt, flux.guidance, flux.scale) == ("a fox", 4.0, None)
    (tmp_path / "p.txt").write_text("# comment\n\nfirst --w 64\nsecond\n")
    prompts = load_prompts(str(tmp_path / "p.txt"), (96, 80))
    assert [(p.prompt, p.width, p.height) for p in prompts] == [("first", 64, 80), ("second", 96, 80)]
    with pytest.raises(Exception, match="sample_prompts: file"):
        load_prompts(str(tmp_path / "missing.txt"), (64, 64))

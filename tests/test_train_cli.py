"""End to end from the CLI: train, check, errors; the saved LoRA reloads in diffusers."""

import re

import numpy as np
import pytest
import safetensors
import torch
from conftest import only_run_dir, read_events, run_cli, write_config
from diffusers import DiffusionPipeline


def test_train_writes_lora_run_folder_and_events(tmp_path, make_config):
    config = make_config(sample_prompts=["red circle --w 64 --h 64 --s 2"], sample_every_n_steps=2,
                         training_comment="hello")
    result = run_cli("train", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    run_dir = only_run_dir(out)
    events = read_events(run_dir)
    types = [e["type"] for e in events]
    assert types[0] == "plan" and types[-1] == "finished" and events[-1]["status"] == "completed"
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(e["loss"]) and e["lr"] > 0 and set(e["lrs"]) == {"unet", "text_encoder"}
               for e in steps)
    assert (run_dir / "config.yaml").is_file() and "step 4/4" in (run_dir / "train.log").read_text()
    with safetensors.safe_open(str(out / "test.safetensors"), "pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith("lora_te_") and k.endswith(".lora_up.weight") for k in keys)
    assert meta["ss_training_comment"] == "hello" and meta["ss_steps"] == "4"
    assert meta["ss_network_dim"] == "4" and float(meta["ss_network_alpha"]) == 2.0


def test_check_prints_the_plan_train_runs(tmp_path, make_config):
    config = make_config(max_train_steps=None, max_train_epochs=2, gradient_accumulation_steps=2)
    path = write_config(tmp_path / "c.yaml", config)
    checked = run_cli("check", path)
    assert checked.returncode == 0, checked.stderr
    assert "5_circle: 6 images × 5 repeats = 30" in checked.stdout
    total = int(checked.stdout.split("total steps = ")[1].split("=")[-1].split()[0])
    trained = run_cli("train", path)
    assert trained.returncode == 0, trained.stderr
    events = read_events(only_run_dir(tmp_path / "out"))
    plan = next(e for e in events if e["type"] == "plan")
    assert plan["total_steps"] == total == len([e for e in events if e["type"] == "step"])


@pytest.mark.parametrize("variant", ["sd1", "sd2v", "sdxl"])
def test_saved_lora_reproduces_trained_model_in_diffusers(tmp_path, make_config, request, variant):
    """The file loads with diffusers' load_lora_weights and gives the trained model's own output."""
    from accelerate import Accelerator

    from trainer.checks.preflight import run_preflight
    from trainer.config.io import validate_config
    from trainer.run.events import RunLog
    from trainer.training.loop import Trainer

    model_path = request.getfixturevalue(f"tiny_{variant}")
    config = validate_config(make_config(pretrained_model_name_or_path=str(model_path), network_dim=4,
                                         network_alpha=1.5, learning_rate=5e-2, resolution="64"))
    log = RunLog(tmp_path / "run")
    trainer = Trainer(config, run_preflight(config), log, Accelerator(mixed_precision="no"))
    trainer.setup()
    assert trainer.run() == "completed"
    log.close()
    assert trainer.model.v_parameterization == (variant == "sd2v")
    trained = _pipeline(trainer.model)
    loaded = DiffusionPipeline.from_pretrained(model_path, safety_checker=None)
    before = _generate(loaded)
    loaded.load_lora_weights(str(tmp_path / "out" / "test.safetensors"))
    expected, actual = _generate(trained), _generate(loaded)
    assert np.abs(expected - before).max() > 1e-3  # the LoRA changes the output
    assert np.abs(expected - actual).max() <= 1e-4


def _pipeline(model):
    for part in [model.denoiser, *model.text_encoders]:
        part.eval()
    return model.pipeline("ddim")


def _generate(pipe) -> np.ndarray:
    from trainer.training.sampling import make_sampler

    pipe.scheduler = make_sampler("ddim", pipe.scheduler.config)
    with torch.no_grad():
        return pipe("red circle", num_inference_steps=3, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images


def test_two_cpu_processes_share_the_epoch_and_the_caching(tmp_path, make_config):
    """num_processes 2: `train` launches two gloo-synchronised processes (trainer/run/launch.py), one writer, batches
    of 2 × train_batch_size (so half the steps per epoch), each caching half of the latents. The text encoder trains
    with clip_skip 2, so its last layer's LoRA takes no gradient: without DDP's unused-parameter search the first
    step fails."""
    path = write_config(tmp_path / "c.yaml", make_config(max_train_steps=None, max_train_epochs=1, num_processes=2,
                                                         gradient_accumulation_steps=2, clip_skip=2))
    result = run_cli("train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "run")
    plan = events[0]
    # each bucket's n entries make ceil(n / (batch 2 × 2 processes)) batches; 2 batches a step
    assert plan["num_processes"] == 2 and plan["batches_per_epoch"] == sum(-(-n // 4) for n in plan["buckets"].values())
    assert plan["steps_per_epoch"] == -(-plan["batches_per_epoch"] // 2)
    assert [e["type"] for e in events].count("finished") == 1
    assert len([e for e in events if e["type"] == "step"]) == plan["total_steps"]
    assert (tmp_path / "out" / "test.safetensors").is_file()
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert re.search(r"latents cached: (\d+) \((\d+) \+ (\d+) by 2 processes\)", log), log
    assert "starting 2 training processes on this machine" in result.stdout

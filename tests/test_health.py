"""The 炸炉 detector: non-finite steps stop the run (or are skipped), loss divergence and collapse warn, broken
previews are flagged, and health events reach events.jsonl, train.log and TensorBoard."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, read_events, write_config
from diffusers import DiffusionPipeline
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer.checks.preflight import scan_and_plan
from trainer.common.errors import ConfigError
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.run.state import RunState
from trainer.training.export import load_lora
from trainer.training.health import (
    COLLAPSE_LOSS,
    EMA_WINDOW,
    ZERO_GRAD_STEPS,
    HealthMonitor,
    PreviewJudge,
    diagnose_nan,
    score_image,
)
from trainer.training.loop import train


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def run(tmp_path, make_config, **overrides):
    run_dir = tmp_path / "run"
    status = train(validate_config(make_config(**overrides)), run_dir)
    return status, read_events(run_dir), run_dir


# --- the proof: an absurd learning rate -------------------------------------------------------------------
def test_absurd_learning_rate_stops_with_nan_loss_and_keeps_the_epoch_file(tmp_path, make_config, train_dir):
    """One run: StepLR multiplies the learning rate by 1e9 when epoch 2 begins (1e-3 -> 1e6), so epoch 1 trains
    normally and saves its file, and epoch 2 explodes at once. The run must stop at the first step whose loss or
    gradients are not finite (every step event before it is finite, none comes after), finish as failed, write no
    further file, and leave the epoch-1 file loadable in diffusers. Four images make an epoch of two steps."""
    small = tmp_path / "data" / "1_shapes"
    small.mkdir(parents=True)
    for image in sorted(train_dir.glob("*/*_0[01].png")):
        (small / image.name).write_bytes(image.read_bytes())
    config = make_config(train_data_dir=str(small.parent), max_train_steps=None, max_train_epochs=4,
                         save_every_n_epochs=1)
    steps_per_epoch = scan_and_plan(validate_config(config))[2].steps_per_epoch
    status, events, run_dir = run(tmp_path, make_config, **config, lr_scheduler_type="StepLR",
                                  lr_scheduler_args=[f"step_size={steps_per_epoch}", "gamma=1e9"])
    assert status == "failed"
    steps, (health,) = of_type(events, "step"), of_type(events, "health")
    assert health["code"] == "nan_loss" and health["level"] == "error" and health["hint"]
    assert "(learning rate 1e+06)" in health["message"] and "learning rate" in health["hint"]
    assert all(math.isfinite(e["loss"]) and math.isfinite(e["grad_norm"]) for e in steps)
    assert steps_per_epoch == 2 and health["step"] == steps[-1]["step"] + 1 == 4  # the first bad step; no more
    assert events[-1] == {**events[-1], "type": "finished", "status": "failed", "step": health["step"]}
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["test-000001.safetensors"]
    tensors, meta = load_lora(out / "test-000001.safetensors")
    assert meta["ss_epoch"] == "1" and all(torch.isfinite(t).all() for t in tensors.values())
    pipe = DiffusionPipeline.from_pretrained(config["pretrained_model_name_or_path"], safety_checker=None)
    pipe.load_lora_weights(str(out / "test-000001.safetensors"))
    assert pipe.unet.peft_config  # the LoRA was applied, not silently dropped
    with torch.no_grad():
        image = pipe("red circle", num_inference_steps=2, height=64, width=64, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images[0]
    assert np.isfinite(image).all() and score_image(image) != "black_sample"
    _assert_shown_everywhere(run_dir, "nan_loss", "ERROR")


def test_on_nan_warn_skips_the_bad_steps_and_completes(tmp_path, make_config):
    """AdamW at learning_rate 10 (above its sane range) keeps the tiny model finite for 3 steps; StepLR then
    multiplies it by 1e9, and every later step is NaN (on every CPU: lr 10 alone exploded on some and not on
    others). on_nan: warn skips them: the run completes and its final file holds the last finite weights."""
    status, events, _ = run(tmp_path, make_config, learning_rate=10, max_train_steps=5, on_nan="warn",
                            lr_scheduler_type="StepLR", lr_scheduler_args=["step_size=3", "gamma=1e9"])
    assert status == "completed"
    (health,) = of_type(events, "health")  # steps 4 and 5 skipped: warned for the 1st only (then 10th, 100th)
    assert health["level"] == "warning" and health["code"] == "nan_loss" and "skipped" in health["message"]
    assert "high for AdamW" in health["message"] and "learning_rate" in health["hint"]
    assert [e["step"] for e in of_type(events, "step")] == list(range(1, health["step"]))
    tensors, _ = load_lora(tmp_path / "out" / "test.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())


class PoisonedAdamW(torch.optim.AdamW):
    """Makes the LoRA weights NaN in its second step, after the loss and gradients were checked and found finite
    (optimizer_type accepts a class path; this test module is importable under pytest)."""

    def step(self, closure=None):
        result = super().step(closure)
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == 2:
            self.param_groups[0]["params"][0].data.fill_(float("nan"))
        return result


def test_no_file_is_written_with_non_finite_weights(tmp_path, make_config):
    status, events, _ = run(tmp_path, make_config, optimizer_type="test_health.PoisonedAdamW", max_train_steps=3,
                            save_every_n_steps=2)
    assert status == "failed" and not list((tmp_path / "out").glob("*.safetensors"))
    (health,) = of_type(events, "health")
    assert health["code"] == "nan_loss" and "test-step00000002.safetensors was not written" in health["message"]
    assert not of_type(events, "checkpoint")


def test_on_nan_accepts_only_stop_or_warn(make_config):
    with pytest.raises(ConfigError, match="on_nan"):
        validate_config(make_config(on_nan="ignore"))


# --- previews ---------------------------------------------------------------------------------------------
def _latent_noise(size: int, resample: int) -> np.ndarray:
    """What a VAE makes of random latents: independent values per 8x8 pixel block, upscaled."""
    grid = np.random.default_rng(1).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), resample))


BROKEN = {
    "black": (np.zeros((64, 64, 3), np.uint8), "black_sample"),
    "near black": (np.random.default_rng(0).integers(0, 4, (64, 64, 3), dtype=np.uint8), "black_sample"),
    "white": (np.full((64, 64, 3), 255, np.uint8), "black_sample"),
    "one colour": (np.full((64, 64, 3), (200, 60, 30), np.uint8), "black_sample"),
    "NaN": (np.full((64, 64, 3), np.nan), "black_sample"),
    "uniform noise": (np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8), "noise_sample"),
    "small noise": (np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), "noise_sample"),
    "grey noise": (np.clip(np.random.default_rng(0).normal(128, 20, (64, 64, 3)), 0, 255).astype(np.uint8),
                   "noise_sample"),
    "latent noise, blocks": (_latent_noise(256, Image.NEAREST), "noise_sample"),
    "latent noise, bilinear": (_latent_noise(512, Image.BILINEAR), "noise_sample"),
    "latent noise, bicubic": (_latent_noise(256, Image.BICUBIC), "noise_sample"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_previews_are_flagged(name):
    image, code = BROKEN[name]
    assert score_image(image) == code


def test_pictures_are_not_flagged(train_dir):
    """A smooth gradient, the demo's shapes (some of equal brightness on their background), and photos."""
    ramp = np.linspace(0, 255, 512)[None, :, None] * np.ones((512, 1, 3))
    assert score_image(ramp.astype(np.uint8)) is None
    assert score_image(ramp / 255) is None  # float images in [0, 1] too
    shapes = sorted(train_dir.glob("*/*.png"))
    assert len(shapes) == 10
    for path in shapes:
        image = Image.open(path).convert("RGB")
        assert score_image(np.asarray(image)) is None, path
        assert score_image(np.asarray(image.resize((512, 512)))) is None, path
    for path in _photos():
        image = Image.open(path).convert("RGB")
        for size in (64, 256, 512):
            assert score_image(np.asarray(image.resize((size, size)))) is None, (path, size)


def _photos() -> list[Path]:
    """Photos that ship with gradio (a dependency), the only real pictures on a machine without network."""
    gradio = pytest.importorskip("gradio")
    photos = [p for p in (Path(gradio.__file__).parent / "media_assets" / "images").glob("*.jp*g")]
    if not photos:
        pytest.skip("gradio ships no photos in this version")
    return photos


def test_a_noise_preview_warns_and_the_run_goes_on(tmp_path, make_config):
    """The tiny random model paints noise at 256 px (at 64 px it is too small to tell from a thumbnail)."""
    status, events, run_dir = run(tmp_path, make_config, max_train_steps=1, sample_at_first=True,
                                  sample_prompts=["red circle --w 256 --h 256 --s 4 --d 1"])
    assert status == "completed"
    (health,) = of_type(events, "health")
    assert health["code"] == "base_sample" and health["level"] == "warning" and health["step"] == 0
    assert health["path"].endswith("e0000-s000000-p0.png") and "base model" in health["hint"]
    assert "before any training" in health["message"] and "底模" in health["message_zh"]
    _assert_shown_everywhere(run_dir, "base_sample", "WARNING")


NOISE = BROKEN["uniform noise"][0]
PICTURE = (np.linspace(0, 255, 256)[None, :, None] * np.ones((256, 1, 3))).astype(np.uint8)


def test_a_preview_is_judged_against_its_prompts_preview_before_training():
    """The same noise after training is the LoRA's doing only when the prompt gave a picture before it."""
    judge = PreviewJudge()
    assert judge.judge(0, PICTURE, 0, "p0-before.png") is None
    assert judge.judge(1, NOISE, 0, "p1-before.png").code == "base_sample"
    blown = judge.judge(0, NOISE, 40, "p0.png")
    assert blown.code == "noise_sample" and "blown up" in blown.hint and "step 0 was a picture" in blown.message
    same = judge.judge(1, NOISE, 40, "p1.png")  # noise before training, noise now: not the learning rate
    assert same.code == "base_sample" and "not the LoRA" in same.message and "will not help" in same.hint
    assert same.message_zh and same.hint_zh


def test_without_a_preview_before_training_the_first_noise_is_put_on_the_base_model():
    judge = PreviewJudge()
    first = judge.judge(0, NOISE, 20, "e0001-p0.png")
    assert first.code == "base_sample" and "first preview" in first.message and "sample_at_first" in first.message
    assert judge.judge(0, NOISE, 40, "e0002-p0.png").code == "base_sample"


def test_one_banner_per_problem_with_a_count():
    state = RunState()
    judge = PreviewJudge()
    events = [judge.judge(i % 2, NOISE, step, f"s{step}-p{i % 2}.png") for i, step in enumerate((0, 0, 20, 20, 40))]
    state.apply([{"type": "health", **event.fields()} for event in events])
    (banner,) = state.banners
    assert banner.code == "base_sample" and banner.count == 5 and banner.message.startswith("preview s40-p0.png")
    state.apply([{"type": "error", "code": "boom", "message": "m"}] * 2)
    assert [(b.code, b.count) for b in state.banners] == [("base_sample", 5), ("boom", 2)]


def _assert_shown_everywhere(run_dir: Path, code: str, log_level: str) -> None:
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert f"{log_level} health {code}:" in log
    tb = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0}).Reload()
    assert f"health/{code}" in tb.Tags()["scalars"]
    assert any(code in t.tensor_proto.string_val[0].decode() for t in tb.Tensors("health/text_summary"))


# --- loss curve -------------------------------------------------------------------------------------------
def _monitor(**overrides) -> HealthMonitor:
    return HealthMonitor(TrainConfig(mixed_precision="no", **overrides))


def _feed(monitor: HealthMonitor, losses, grad_norm: float | None = 0.5) -> list:
    return [event for step, loss in enumerate(losses, 1) for event in monitor.observe(step, float(loss), grad_norm)]


def test_a_noisy_but_steady_loss_raises_nothing():
    """Diffusion losses jump from step to step (each draws its own timesteps): 0.02 to 0.3 for 2000 steps."""
    rng = np.random.default_rng(0)
    assert _feed(_monitor(), rng.uniform(0.02, 0.3, 2000)) == []
    assert _feed(_monitor(), np.linspace(0.2, 0.08, 2000) + rng.normal(0, 0.03, 2000)) == []  # learning


def test_a_rising_loss_warns_once_as_divergence():
    rng = np.random.default_rng(0)
    steady = rng.uniform(0.05, 0.15, 100)
    rising = np.linspace(0.1, 1.0, 200) + rng.normal(0, 0.02, 200)
    events = _feed(_monitor(), np.concatenate([steady, rising]))
    assert [(e.code, e.level) for e in events] == [("loss_divergence", "warning")]
    assert 100 < events[0].step < 300 and "learning rate" in events[0].hint


def test_a_loss_near_zero_or_zero_gradients_warn_as_collapse():
    events = _feed(_monitor(), np.concatenate([np.full(20, 0.1), np.full(200, COLLAPSE_LOSS / 100)]))
    assert [e.code for e in events] == ["loss_collapse"] and "collapsed" in events[0].message
    assert events[0].step >= EMA_WINDOW
    events = _feed(_monitor(), np.full(ZERO_GRAD_STEPS + 5, 0.1), grad_norm=0.0)
    assert [(e.code, e.step) for e in events] == [("loss_collapse", ZERO_GRAD_STEPS)]
    assert "zero" in events[0].message
    assert _feed(_monitor(), np.full(ZERO_GRAD_STEPS - 1, 0.1), grad_norm=0.0) == []


def test_on_nan_warn_reports_the_1st_10th_and_100th_skipped_step():
    monitor = _monitor(on_nan="warn")
    reported = [step for step in range(1, 151) if monitor.non_finite(step, math.nan, math.nan, 1e-4)]
    assert reported == [1, 10, 100]
    assert _monitor().non_finite(7, 1.0, math.inf, None).level == "error"


# --- diagnosis --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, cause, hint", [
    ({"mixed_precision": "fp16"}, "fp16 overflows", "bf16"),
    ({"mixed_precision": "fp16", "model_family": "flux"}, "Flux.1 was made in bf16", "bf16"),
    ({"learning_rate": 5e-3}, "learning_rate 0.005 is high for AdamW", "lower learning_rate"),
    ({"optimizer_type": "Lion", "unet_lr": 1e-3}, "unet_lr 0.001 is high for Lion", "lower unet_lr"),
    ({"optimizer_type": "Prodigy", "learning_rate": 3.0}, "Prodigy", "set learning_rate to 1.0"),
    ({"network_alpha": 64, "network_dim": 16}, "network_alpha 64 is above network_dim 16", "network_alpha"),
    ({"max_grad_norm": 0}, "clipping is off", "max_grad_norm: 1.0"),
    ({"optimizer_type": "Prodigy", "learning_rate": 0.5}, "no setting stands out", "lower the learning rate"),
    ({}, "no setting stands out", "lower the learning rate"),
])
def test_nan_diagnosis_names_the_likely_cause(settings, cause, hint):
    causes, first_hint = diagnose_nan(TrainConfig(**{"mixed_precision": "no", **settings}))
    assert cause in causes[0] and hint in first_hint and "\n" not in first_hint


def test_nan_diagnosis_puts_the_learning_rate_before_precision():
    causes, hint = diagnose_nan(TrainConfig(mixed_precision="fp16", learning_rate=1e-2, max_grad_norm=0))
    assert len(causes) == 3 and "high for AdamW" in causes[0] and "lower learning_rate" in hint


def test_two_processes_stop_together(tmp_path, make_config):
    """torchrun with 2 CPU processes: both see the non-finite step and end; one health event, one `finished`,
    and the command exits with an error instead of hanging at the next synchronisation."""
    config = write_config(tmp_path / "c.yaml", make_config(learning_rate=10, max_train_steps=8))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "trainer",
                             "train", str(config), "--run-dir", str(tmp_path / "run")], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1, result.stderr[-3000:]
    events = read_events(tmp_path / "run")
    assert [e["code"] for e in of_type(events, "health")] == ["nan_loss"]
    assert [e["status"] for e in of_type(events, "finished")] == ["failed"]

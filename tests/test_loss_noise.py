"""sd-scripts' noise and loss options: each test fails if its option were ignored."""

import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import read_events
from diffusers import DDPMScheduler

from trainer.checks.preflight import run_preflight
from trainer.common.errors import ConfigError, UserError
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.config.schema.loss import LOSS_TYPES
from trainer.run.events import RunLog
from trainer.training.draws import Draws
from trainer.training.export import load_lora
from trainer.training.loop import Trainer, train
from trainer.training.loss import (
    elementwise_loss,
    huber_threshold,
    timestep_weights,
    training_loss,
)
from trainer.training.noise import noisy_latents, prepare_scheduler, training_noise

TIMESTEPS = torch.tensor([0, 1, 10, 100, 300, 600, 900, 999])


def ddpm(prediction_type: str = "epsilon") -> DDPMScheduler:
    """sd-scripts' training scheduler for SD 1.x/2.x."""
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, clip_sample=False, prediction_type=prediction_type)


def snr_of(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = scheduler.alphas_cumprod[timesteps].double()
    return alphas_cumprod / (1 - alphas_cumprod)


def channel_mean_variance(noise: torch.Tensor) -> float:
    """Variance over samples and channels of each channel's spatial mean: 1/(H·W) for white noise."""
    return float(noise.double().mean(dim=(2, 3)).var())


def draws(latents: torch.Tensor, key: object = 0) -> Draws:
    """One process's draws for the whole batch; another key, other numbers."""
    return Draws.whole(len(latents), str(key))


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return torch.allclose(got.double(), expected.double(), rtol=1e-5, atol=1e-7)


# --- per-sample weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_gamma_weights(prediction_type):
    scheduler, gamma = ddpm(prediction_type), 5.0
    snr = snr_of(scheduler, TIMESTEPS)
    denominator = snr + 1 if prediction_type == "v_prediction" else snr
    expected = torch.clamp(snr, max=gamma) / denominator
    config = TrainConfig(min_snr_gamma=gamma)
    assert timestep_weights(TrainConfig(), scheduler, TIMESTEPS) is None  # no weighting: no operations
    assert close(timestep_weights(config, scheduler, TIMESTEPS), expected)
    assert not close(expected, torch.ones_like(expected))
    # the weights reach the loss: every per-sample error is 1 here, so the loss is the mean weight
    ones, zeros = torch.ones(len(TIMESTEPS), 4, 2, 2), torch.zeros(len(TIMESTEPS), 4, 2, 2)
    is_reg = torch.zeros(len(TIMESTEPS), dtype=torch.bool)
    loss = training_loss(config, scheduler, ones, zeros, TIMESTEPS, is_reg)
    assert float(loss) == pytest.approx(float(expected.mean()), rel=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_debiased_estimation_weights(prediction_type):
    scheduler = ddpm(prediction_type)
    snr = torch.clamp(snr_of(scheduler, TIMESTEPS), max=1000)
    expected = 1 / (snr + 1) if prediction_type == "v_prediction" else 1 / snr.sqrt()
    got = timestep_weights(TrainConfig(debiased_estimation_loss=True), scheduler, TIMESTEPS)
    assert close(got, expected)


def test_scale_v_pred_loss_like_noise_pred_and_v_pred_like_loss_weights():
    snr = torch.clamp(snr_of(ddpm(), TIMESTEPS), max=1000)
    scaled = timestep_weights(TrainConfig(scale_v_pred_loss_like_noise_pred=True), ddpm("v_prediction"), TIMESTEPS)
    assert close(scaled, snr / (snr + 1))
    like = timestep_weights(TrainConfig(v_pred_like_loss=0.2), ddpm(), TIMESTEPS)
    assert close(like, 1 + 0.2 * (snr + 1) / snr)


def test_weights_multiply_with_prior_loss_weight():
    scheduler, timesteps = ddpm(), torch.tensor([50, 50])
    config = TrainConfig(min_snr_gamma=2.0, prior_loss_weight=0.5)
    weight = float(timestep_weights(config, scheduler, timesteps)[0])
    loss = training_loss(config, scheduler, torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2), timesteps,
                         torch.tensor([False, True]))
    assert float(loss) == pytest.approx(weight * (1 + 0.5) / 2, rel=1e-6)


# --- loss types -----------------------------------------------------------------------------------
DELTAS = [0.05, -0.5, 2.0]


def closed_form(loss_type: str, delta: float, c: float) -> float:
    root = math.sqrt(delta ** 2 + c ** 2)
    return {"l2": delta ** 2, "l1": abs(delta), "huber": 2 * c * (root - c), "smooth_l1": 2 * (root - c)}[loss_type]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_types_give_their_closed_form(loss_type):
    c = 0.1
    prediction, target = torch.tensor(DELTAS).view(1, 1, 1, 3), torch.zeros(1, 1, 1, 3)
    got = elementwise_loss(loss_type, prediction, target, torch.tensor([c]))
    assert close(got.flatten(), torch.tensor([closed_form(loss_type, d, c) for d in DELTAS]))
    # through the whole loss, with a constant huber threshold huber_c × huber_scale
    config = TrainConfig(loss_type=loss_type, huber_schedule="constant", huber_c=0.05, huber_scale=2.0)
    loss = training_loss(config, ddpm(), prediction, target, torch.tensor([500]), torch.tensor([False]))
    assert float(loss) == pytest.approx(float(np.mean([closed_form(loss_type, d, 0.1) for d in DELTAS])), rel=1e-5)


def test_huber_schedules_give_sd_scripts_thresholds():
    scheduler, c, scale = ddpm(), 0.1, 1.5
    t = TIMESTEPS.double()

    def threshold(schedule, loss_type="huber"):
        config = TrainConfig(loss_type=loss_type, huber_schedule=schedule, huber_c=c, huber_scale=scale)
        return huber_threshold(config, scheduler, TIMESTEPS)

    assert close(threshold("constant"), torch.full((len(TIMESTEPS),), c * scale))
    assert close(threshold("exponential"), torch.exp(math.log(c) * t / 1000) * scale)
    alphas_cumprod = scheduler.alphas_cumprod[TIMESTEPS].double()
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    assert close(threshold("snr", "smooth_l1"), (1 - c) / (1 + sigmas) ** 2 + c)
    assert huber_threshold(TrainConfig(loss_type="l1"), scheduler, TIMESTEPS) is None


def test_scheduled_huber_threshold_reaches_the_loss():
    config = TrainConfig(loss_type="huber", huber_schedule="exponential", huber_c=0.1)
    timesteps = torch.tensor([0, 1000 - 1])
    prediction, target = torch.full((2, 1, 1, 1), 0.5), torch.zeros(2, 1, 1, 1)
    thresholds = [1.0, 0.1 ** (999 / 1000)]
    expected = np.mean([closed_form("huber", 0.5, c) for c in thresholds])
    loss = training_loss(config, ddpm(), prediction, target, timesteps, torch.tensor([False, False]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


# --- noise ----------------------------------------------------------------------------------------
def test_noise_offset_adds_a_per_channel_constant():
    latents = torch.zeros(256, 4, 16, 16)
    plain = channel_mean_variance(training_noise(TrainConfig(), latents, draws(latents)))
    offset = channel_mean_variance(training_noise(TrainConfig(noise_offset=0.3), latents, draws(latents)))
    assert plain == pytest.approx(1 / 256, rel=0.15)
    assert offset == pytest.approx(1 / 256 + 0.3 ** 2, rel=0.15)


def test_noise_offset_random_strength_draws_a_strength_per_batch():
    latents, config = torch.zeros(4, 4, 8, 8), TrainConfig(noise_offset=0.5, noise_offset_random_strength=True)
    variances = [channel_mean_variance(training_noise(config, latents, draws(latents, i))) for i in range(300)]
    # strength ~ U(0, 0.5): E[strength²] = 0.5² / 3
    assert np.mean(variances) == pytest.approx(1 / 64 + 0.25 / 3, rel=0.2)
    assert min(variances) < 0.03 < 0.15 < max(variances)


def test_adaptive_noise_scale_grows_the_offset_with_the_latent_mean():
    latents = torch.full((256, 4, 16, 16), -2.0)  # |channel mean| = 2
    base = channel_mean_variance(training_noise(TrainConfig(noise_offset=0.1), latents, draws(latents)))
    adaptive = channel_mean_variance(training_noise(TrainConfig(noise_offset=0.1, adaptive_noise_scale=0.2),
                                                    latents, draws(latents)))
    assert base == pytest.approx(1 / 256 + 0.1 ** 2, rel=0.15)
    assert adaptive == pytest.approx(1 / 256 + (0.1 + 0.2 * 2) ** 2, rel=0.15)


def test_multires_noise_adds_low_frequencies_at_unit_variance():
    latents = torch.zeros(64, 4, 32, 32)
    plain = training_noise(TrainConfig(), latents, draws(latents))
    multires = training_noise(TrainConfig(multires_noise_iterations=6), latents, draws(latents))
    strong = training_noise(TrainConfig(multires_noise_iterations=6, multires_noise_discount=0.8), latents,
                            draws(latents))
    for noise in (multires, strong):  # unit variance per sample (sd-scripts: per batch; the same at batch 1)
        assert noise.std(dim=(1, 2, 3)).tolist() == pytest.approx([1.0] * 64, abs=1e-4)
    white = 1 / (32 * 32)
    assert channel_mean_variance(plain) < 1.3 * white
    assert channel_mean_variance(multires) > 1.5 * white
    assert channel_mean_variance(strong) > 20 * white  # a larger discount keeps more of the coarse levels
    neighbours = torch.corrcoef(torch.stack([strong[..., :-1].flatten(), strong[..., 1:].flatten()]))[0, 1]
    assert float(neighbours) > 0.15  # smooth, low-frequency structure; white noise has none


def test_ip_noise_gamma_changes_the_noisy_latents_but_not_the_target_noise():
    scheduler, latents = ddpm(), torch.randn(512, 4, 8, 8)
    plain_noisy, plain_noise, plain_t = noisy_latents(TrainConfig(), scheduler, latents, draws(latents))
    noisy, noise, timesteps = noisy_latents(TrainConfig(ip_noise_gamma=0.1), scheduler, latents, draws(latents))
    assert torch.equal(noise, plain_noise) and torch.equal(timesteps, plain_t)
    assert torch.equal(plain_noisy, scheduler.add_noise(latents, noise, timesteps))
    sigma = (1 - scheduler.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1)
    extra = (noisy - plain_noisy) / sigma
    assert float(extra.std()) == pytest.approx(0.1, rel=0.05)


def test_ip_noise_gamma_random_strength_varies_per_batch():
    scheduler, latents = ddpm(), torch.zeros(64, 4, 8, 8)
    config = TrainConfig(ip_noise_gamma=0.2, ip_noise_gamma_random_strength=True)
    spreads = []
    for i in range(30):
        noisy, noise, timesteps = noisy_latents(config, scheduler, latents, draws(latents, i))
        sigma = (1 - scheduler.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1)
        spreads.append(float(((noisy - scheduler.add_noise(latents, noise, timesteps)) / sigma).std()))
    assert max(spreads) < 0.2 and min(spreads) < 0.1 < max(spreads)


def test_timesteps_stay_within_min_and_max_timestep():
    latents, scheduler = torch.zeros(4000, 1, 1, 1), ddpm()
    _, _, timesteps = noisy_latents(TrainConfig(min_timestep=200, max_timestep=300), scheduler, latents,
                                    draws(latents))
    assert int(timesteps.min()) == 200 and int(timesteps.max()) == 299
    _, _, timesteps = noisy_latents(TrainConfig(), scheduler, latents, draws(latents))
    assert int(timesteps.min()) < 10 and int(timesteps.max()) > 990


def test_zero_terminal_snr_rescales_the_betas():
    scheduler = ddpm("v_prediction")
    original = scheduler.alphas_cumprod.clone()
    assert prepare_scheduler(TrainConfig(zero_terminal_snr=True), scheduler) == []
    assert float(scheduler.alphas_cumprod[-1]) == 0.0 and float(original[-1]) > 0
    assert float(scheduler.alphas_cumprod[0]) == pytest.approx(float(original[0]), rel=1e-6)
    assert bool((scheduler.alphas_cumprod[1:] < scheduler.alphas_cumprod[:-1]).all())
    assert torch.allclose(scheduler.alphas, 1 - scheduler.betas)
    # as sd-scripts, the SNR weights keep the schedule from before the rescale: finite at the last step
    last = torch.tensor([999])
    weights = timestep_weights(TrainConfig(min_snr_gamma=5), scheduler, last)
    original_snr = snr_of(ddpm(), last)
    assert close(weights, torch.clamp(original_snr, max=5) / (original_snr + 1))
    unchanged = ddpm("v_prediction")
    prepare_scheduler(TrainConfig(), unchanged)
    assert torch.equal(unchanged.alphas_cumprod, original)


def test_zero_terminal_snr_on_an_epsilon_model_warns():
    warnings = prepare_scheduler(TrainConfig(zero_terminal_snr=True), ddpm())
    assert len(warnings) == 1 and "zero_terminal_snr" in warnings[0]


def test_prediction_type_rules_after_loading():
    with pytest.raises(UserError, match="scale_v_pred_loss_like_noise_pred"):
        prepare_scheduler(TrainConfig(scale_v_pred_loss_like_noise_pred=True), ddpm())
    with pytest.raises(UserError, match="v_pred_like_loss"):
        prepare_scheduler(TrainConfig(v_pred_like_loss=0.1), ddpm("v_prediction"))


# --- config rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"adaptive_noise_scale": 0.01}, "adaptive_noise_scale needs noise_offset"),
    ({"noise_offset_random_strength": True}, "noise_offset_random_strength needs noise_offset"),
    ({"ip_noise_gamma_random_strength": True}, "ip_noise_gamma_random_strength needs ip_noise_gamma"),
    ({"min_timestep": 500, "max_timestep": 500}, "min_timestep (500) must be smaller than max_timestep (500)"),
    ({"min_timestep": 999, "max_timestep": None}, None),
    ({"max_timestep": 1001}, "max_timestep"),
    ({"loss_type": "l3"}, "loss_type"),
    ({"huber_c": 0}, "huber_c"),
    ({"scale_v_pred_loss_like_noise_pred": True, "v_parameterization": False}, "scale_v_pred_loss_like_noise_pred"),
    ({"v_pred_like_loss": 0.1, "v_parameterization": True}, "v_pred_like_loss"),
])
def test_config_rules_name_the_keys(make_config, overrides, message):
    if message is None:
        validate_config(make_config(**overrides))
        return
    with pytest.raises(ConfigError) as error:
        validate_config(make_config(**overrides))
    assert message in str(error.value)


def test_noise_offset_with_multires_is_allowed_and_both_apply():
    """sd-scripts dropped its exclusivity check: offset first, then the pyramid renormalises to unit std."""
    latents = torch.zeros(128, 4, 32, 32)
    both = training_noise(TrainConfig(noise_offset=0.3, multires_noise_iterations=6), latents, draws(latents))
    assert both.std(dim=(1, 2, 3)).tolist() == pytest.approx([1.0] * 128, abs=1e-4)
    assert channel_mean_variance(both) > 0.02  # the offset survives the renormalisation (~0.002 without)


# --- in the training loop -------------------------------------------------------------------------
def first_losses(run_dir):
    return [e["loss"] for e in read_events(run_dir) if e["type"] == "step"]


def test_training_with_noise_and_loss_options_is_finite(tmp_path, make_config):
    options = dict(noise_offset=0.1, adaptive_noise_scale=0.01, multires_noise_iterations=4, ip_noise_gamma=0.1,
                   min_snr_gamma=5, loss_type="huber", huber_schedule="snr", min_timestep=100, max_timestep=900)
    assert train(validate_config(make_config(max_train_steps=2, output_name="plain")), tmp_path / "plain") \
        == "completed"
    status = train(validate_config(make_config(max_train_steps=2, **options)), tmp_path / "run")
    losses = first_losses(tmp_path / "run")
    assert status == "completed" and len(losses) == 2 and np.isfinite(losses).all()
    assert losses[0] != pytest.approx(first_losses(tmp_path / "plain")[0], rel=1e-3)
    _, meta = load_lora(tmp_path / "out" / "test.safetensors")
    assert meta["ss_noise_offset"] == "0.1" and meta["ss_loss_type"] == "huber" and meta["ss_min_snr_gamma"] == "5.0"


def test_v_prediction_training_with_zero_terminal_snr(tmp_path, make_config, tiny_sd2v):
    config = validate_config(make_config(
        pretrained_model_name_or_path=str(tiny_sd2v), max_train_steps=2, zero_terminal_snr=True,
        scale_v_pred_loss_like_noise_pred=True, debiased_estimation_loss=True, loss_type="smooth_l1",
        huber_schedule="exponential"))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "run"), Accelerator())
    trainer.setup()
    assert float(trainer.model.noise_scheduler.alphas_cumprod[-1]) == 0.0
    assert trainer.run() == "completed"
    trainer.log.close()
    losses = first_losses(tmp_path / "run")
    assert len(losses) == 2 and np.isfinite(losses).all()


def test_scale_v_pred_loss_on_an_epsilon_model_fails_clearly(tmp_path, make_config):
    with pytest.raises(UserError, match="scale_v_pred_loss_like_noise_pred"):
        train(validate_config(make_config(scale_v_pred_loss_like_noise_pred=True)), tmp_path / "r")

"""Flux.1 training math (sd-scripts' semantics) and the flux schema fields."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from pydantic import ValidationError

from trainer.config.schema.flux import FluxFields
from trainer.families.flux_math import (
    apply_prediction_type,
    flow_shift,
    flow_target,
    flux_shift_mu,
    image_seq_len,
    loss_weighting,
    noisy_model_input,
    sample_sigmas,
    schedule_sigmas,
    time_shift,
)

N = 40000
DEFAULTS = dict(sigmoid_scale=1.0, discrete_flow_shift=1.0, image_seq_len=1024, weighting_scheme="uniform",
                logit_mean=0.0, logit_std=1.0, mode_scale=1.29, device="cpu")


def draw(sampling: str, **overrides) -> torch.Tensor:
    args = {**DEFAULTS, **overrides}
    return sample_sigmas(sampling, N, generator=torch.Generator().manual_seed(0), **args)


def quantile(x: torch.Tensor, q: float) -> float:
    return float(torch.quantile(x, q))


def sigmoid_quantile(q: float, scale: float) -> float:
    """Quantile q of sigmoid(scale * N(0, 1)) (sigmoid is monotone)."""
    return 1 / (1 + math.exp(-scale * math.sqrt(2) * torch.erfinv(torch.tensor(2 * q - 1)).item()))


def test_schedule_equals_diffusers_flow_match_scheduler():
    for shift in (1.0, 3.0):
        expected = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift).sigmas
        assert torch.allclose(schedule_sigmas(shift), expected)


def test_uniform_is_uniform():
    sigmas = draw("uniform", sigmoid_scale=5.0, discrete_flow_shift=3.0)  # neither is used by uniform
    assert sigmas.shape == (N,) and 0 <= sigmas.min() and sigmas.max() <= 1
    assert quantile(sigmas, 0.25) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_sigmoid_spread_follows_sigmoid_scale(scale):
    sigmas = draw("sigmoid", sigmoid_scale=scale)
    assert quantile(sigmas, 0.5) == pytest.approx(0.5, abs=0.01)
    assert quantile(sigmas, 0.1) == pytest.approx(sigmoid_quantile(0.1, scale), abs=0.01)


def test_flow_shift_formula_and_monotonicity():
    s = torch.linspace(0.01, 0.99, 50)
    assert torch.allclose(flow_shift(torch.tensor(0.25), 3.0), torch.tensor(0.5))
    assert torch.equal(flow_shift(s, 1.0), s)
    assert bool((flow_shift(s, 3.0) > flow_shift(s, 2.0)).all()) and bool((flow_shift(s, 2.0) > s).all())
    assert bool((flow_shift(s, 3.0).diff() > 0).all())


@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_shift_sampling_moves_the_sigmoid_by_discrete_flow_shift(shift):
    sigmas = draw("shift", discrete_flow_shift=shift, sigmoid_scale=1.5)
    for q in (0.2, 0.5, 0.8):
        base = sigmoid_quantile(q, 1.5)
        assert quantile(sigmas, q) == pytest.approx(shift * base / (1 + (shift - 1) * base), abs=0.01)


def test_flux_shift_depends_on_resolution():
    assert image_seq_len(128, 128) == 4096 and image_seq_len(64, 32) == 512
    assert flux_shift_mu(256) == pytest.approx(0.5) and flux_shift_mu(4096) == pytest.approx(1.15)
    medians = {}
    for seq in (256, 4096):
        sigmas = draw("flux_shift", image_seq_len=seq, discrete_flow_shift=9.0)  # shift is not used here
        mu = flux_shift_mu(seq)
        medians[seq] = quantile(sigmas, 0.5)
        assert medians[seq] == pytest.approx(math.exp(mu) / (math.exp(mu) + 1), abs=0.01)
        q = sigmoid_quantile(0.8, 1.0)
        assert quantile(sigmas, 0.8) == pytest.approx(float(time_shift(mu, torch.tensor(q))), abs=0.01)
    assert medians[4096] > medians[256] + 0.1  # larger images train at more noise


def test_sigma_sampling_reads_the_shifted_schedule():
    # u uniform -> index u*1000 -> sigma 1 - index/1000, then shifted: median 0.5 -> 0.75 with shift 3.
    assert quantile(draw("sigma"), 0.5) == pytest.approx(0.5, abs=0.01)
    assert quantile(draw("sigma", discrete_flow_shift=3.0), 0.5) == pytest.approx(0.75, abs=0.01)
    assert set(draw("sigma", discrete_flow_shift=3.0).tolist()) <= set(schedule_sigmas(3.0).tolist())


def test_sigma_sampling_follows_logit_normal_and_mode():
    # logit_normal: u = sigmoid(N(mean, std)); a high u is a low sigma.
    sigmas = draw("sigma", weighting_scheme="logit_normal", logit_mean=1.0, logit_std=0.5)
    assert quantile(sigmas, 0.5) == pytest.approx(1 - 1 / (1 + math.exp(-1.0)), abs=0.01)
    wide = draw("sigma", weighting_scheme="logit_normal", logit_std=2.0)
    assert quantile(wide, 0.1) == pytest.approx(1 - sigmoid_quantile(0.9, 2.0), abs=0.01)
    # mode: u' = 1 - u - s (cos^2(pi u / 2) - 1 + u), decreasing in u, so the 25% quantile of sigma is 1 - u'(0.25).
    for scale in (0.0, 1.29):
        mode = draw("sigma", weighting_scheme="mode", mode_scale=scale)
        u = 1 - 0.25 - scale * (math.cos(math.pi * 0.25 / 2) ** 2 - 1 + 0.25)
        assert quantile(mode, 0.25) == pytest.approx(1 - u, abs=0.01)


def test_seeded_draws_repeat_and_land_on_the_device():
    a = sample_sigmas("shift", 4, generator=torch.Generator().manual_seed(5), **{**DEFAULTS, "device": "meta"})
    assert a.device.type == "meta"
    b = sample_sigmas("shift", 4, generator=torch.Generator().manual_seed(5), **DEFAULTS)
    c = sample_sigmas("shift", 4, generator=torch.Generator().manual_seed(5), **DEFAULTS)
    assert torch.equal(b, c)
    with pytest.raises(ValueError, match="timestep_sampling"):
        sample_sigmas("logit", 4, **DEFAULTS)


def test_noisy_input_and_target():
    latents, noise = torch.randn(3, 16, 4, 4), torch.randn(3, 16, 4, 4)
    sigmas = torch.tensor([0.0, 0.25, 1.0])
    noisy = noisy_model_input(latents, noise, sigmas)
    assert torch.equal(noisy[0], latents[0]) and torch.equal(noisy[2], noise[2])
    assert torch.allclose(noisy[1], 0.75 * latents[1] + 0.25 * noise[1])
    assert torch.equal(flow_target(latents, noise), noise - latents)


def test_prediction_types():
    latents, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    sigmas = torch.tensor([0.2, 0.7])
    noisy = noisy_model_input(latents, noise, sigmas)
    velocity = flow_target(latents, noise)  # a perfect model
    pred, weight = apply_prediction_type("raw", velocity, noisy, sigmas, "sigma_sqrt")
    assert pred is velocity and weight is None
    pred, weight = apply_prediction_type("additive", velocity, noisy, sigmas, "uniform")
    assert torch.allclose(pred, velocity + noisy) and weight is None
    # sigma_scaled: x_t - sigma * v is the clean latent, plus the scheme's loss weighting per image.
    pred, weight = apply_prediction_type("sigma_scaled", velocity, noisy, sigmas, "sigma_sqrt")
    assert torch.allclose(pred, latents, atol=1e-5)
    assert weight.shape == (2, 1, 1, 1) and torch.allclose(weight.flatten(), sigmas ** -2)
    _, ones = apply_prediction_type("sigma_scaled", velocity, noisy, sigmas, "uniform")
    assert torch.equal(ones.flatten(), torch.ones(2))


def test_loss_weighting_formulas():
    s = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(loss_weighting("sigma_sqrt", s), 1 / s ** 2)
    assert torch.allclose(loss_weighting("cosmap", s), 2 / (math.pi * (1 - 2 * s + 2 * s ** 2)))
    for scheme in ("uniform", "none", "logit_normal", "mode"):
        assert torch.equal(loss_weighting(scheme, s), torch.ones(3))
    with pytest.raises(ValueError, match="weighting_scheme"):
        loss_weighting("snr", s)


def test_schema_defaults_are_sd_scripts():
    fields = FluxFields()
    assert (fields.timestep_sampling, fields.sigmoid_scale, fields.discrete_flow_shift) == ("sigma", 1.0, 3.0)
    assert (fields.model_prediction_type, fields.guidance_scale, fields.weighting_scheme) == (
        "sigma_scaled", 3.5, "uniform")
    assert (fields.logit_mean, fields.logit_std, fields.mode_scale) == (0.0, 1.0, 1.29)
    assert (fields.apply_t5_attn_mask, fields.train_t5xxl) == (False, False)
    assert fields.t5xxl_max_token_length is None


@pytest.mark.parametrize(("values", "message"), [
    ({"weighting_scheme": "logit_normal", "timestep_sampling": "shift"}, "set timestep_sampling to sigma"),
    ({"weighting_scheme": "cosmap", "model_prediction_type": "raw"}, "set model_prediction_type to sigma_scaled"),
    ({"timestep_sampling": "flux"}, "timestep_sampling"),
])
def test_schema_refuses_settings_without_effect(values, message):
    with pytest.raises(ValidationError, match=message):
        FluxFields(**values)


def test_train_t5xxl_needs_a_trained_text_encoder(make_config):
    from trainer.config import TrainConfig
    with pytest.raises(ValidationError, match="train_t5xxl trains a text-encoder LoRA"):
        TrainConfig(**make_config(train_t5xxl=True, network_train_unet_only=True))
    assert TrainConfig(**make_config(train_t5xxl=True)).train_t5xxl

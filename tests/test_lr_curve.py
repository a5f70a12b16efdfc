"""trainer/lr_curve.py: the LR the real scheduler gives each trained part over the planned steps."""

import math

import pytest
import torch
from transformers import get_scheduler

from trainer.checks.lr_curve import group_lrs, lr_curve, sampled_steps
from trainer.common.errors import ConfigError
from trainer.config import TrainConfig


def curve(total_steps=100, max_points=200, family=None, **settings) -> dict[str, list[tuple[int, float]]]:
    return lr_curve(TrainConfig(network_train_unet_only=True, **settings), total_steps, max_points, family)


def values(points: list[tuple[int, float]]) -> list[float]:
    return [lr for _, lr in points]


def test_constant_is_flat_at_the_learning_rate():
    points = curve(50, lr_scheduler="constant", learning_rate=2e-4)["unet"]
    assert [step for step, _ in points] == list(range(1, 51))
    assert values(points) == [pytest.approx(2e-4)] * 50


def test_cosine_falls_from_the_rate_to_near_zero():
    lrs = values(curve(100, lr_scheduler="cosine", learning_rate=1e-4)["unet"])
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] < 1e-4 * 0.01
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_starts_low_and_ramps_up():
    lrs = values(curve(100, lr_scheduler="constant", lr_warmup_steps=10, learning_rate=1e-4)["unet"])
    assert lrs[0] == 0 and all(a < b for a, b in zip(lrs[:11], lrs[1:11]))
    assert lrs[10:] == [pytest.approx(1e-4)] * 90
    fraction = values(curve(100, lr_scheduler="cosine", lr_warmup_steps=0.2)["unet"])  # 20% of 100 steps
    assert fraction.index(max(fraction)) == 20


def test_cosine_with_restarts_cycles():
    lrs = values(curve(90, lr_scheduler="cosine_with_restarts", lr_scheduler_num_cycles=3)["unet"])
    jumps = [i for i in range(1, len(lrs)) if lrs[i] > lrs[i - 1]]
    assert jumps == [30, 60]  # the restarts at steps 31 and 61
    assert min(lrs[:30]) < 1e-6 < lrs[30]


def test_polynomial_power_shapes_the_curve():
    linear = values(curve(100, lr_scheduler="polynomial", lr_scheduler_power=1.0)["unet"])
    steep = values(curve(100, lr_scheduler="polynomial", lr_scheduler_power=2.0)["unet"])
    assert steep[50] < linear[50] * 0.75


def test_each_trained_part_has_its_rate():
    config = dict(lr_scheduler="constant", unet_lr=1e-4, text_encoder_lr=5e-5)
    both = lr_curve(TrainConfig(**config), 10)
    assert set(both) == {"unet", "text_encoder"}
    assert values(both["unet"]) == [pytest.approx(1e-4)] * 10
    assert values(both["text_encoder"]) == [pytest.approx(5e-5)] * 10
    sdxl = lr_curve(TrainConfig(**{**config, "text_encoder_lr": [5e-5, 2e-5]}), 10, family="sdxl")
    assert list(sdxl) == ["unet", "text_encoder", "text_encoder_2"] and sdxl["text_encoder_2"][0][1] == 2e-5
    assert list(lr_curve(TrainConfig(**config), 10, family="flux")) == ["transformer"]  # Flux: text encoder frozen


def test_group_names_follow_the_family():
    assert group_lrs(TrainConfig(unet_lr=1e-4, text_encoder_lr=5e-5), "sdxl") == {
        "unet": 1e-4, "text_encoder": 5e-5, "text_encoder_2": 5e-5}
    flux_t5 = TrainConfig(model_family="flux", network_train_unet_only=False, train_t5xxl=True, learning_rate=3e-4)
    assert group_lrs(flux_t5) == {"transformer": 3e-4, "text_encoder": 3e-4, "text_encoder_2": 3e-4}
    assert group_lrs(TrainConfig(network_train_text_encoder_only=True, learning_rate=2e-5)) == {"text_encoder": 2e-5}


def test_sub_sampled_evenly_with_first_and_last():
    points = curve(1000, max_points=50)["unet"]
    steps = [step for step, _ in points]
    assert len(steps) == 50 and steps[0] == 1 and steps[-1] == 1000
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert gaps <= {20, 21}
    assert sampled_steps(5, 200) == {1, 2, 3, 4, 5}


def test_same_as_transformers_get_scheduler():
    total, warmup = 60, 6
    points = curve(total, lr_scheduler="cosine", lr_warmup_steps=warmup, learning_rate=3e-4)["unet"]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=warmup, num_training_steps=total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert values(points) == pytest.approx(expected)


def test_scheduler_class_and_its_args_are_used():
    lrs = values(curve(30, lr_scheduler_type="StepLR", lr_scheduler_args=["step_size=10", "gamma=0.5"],
                       learning_rate=1e-4)["unet"])
    assert lrs[9] == pytest.approx(1e-4) and lrs[10] == pytest.approx(5e-5) and lrs[29] == pytest.approx(2.5e-5)
    with pytest.raises(ConfigError, match="^lr_scheduler: StepLR rejected"):
        curve(30, lr_scheduler_type="StepLR")  # StepLR needs step_size


def test_adafactor_relative_step_has_no_curve():
    assert lr_curve(TrainConfig(optimizer_type="AdaFactor", lr_scheduler="adafactor"), 100) == {}
    fixed = TrainConfig(optimizer_type="AdaFactor", optimizer_args=["relative_step=False"], lr_scheduler="linear")
    assert math.isclose(lr_curve(fixed, 10)["unet"][0][1], fixed.learning_rate)


def test_no_steps_is_refused():
    with pytest.raises(ValueError, match="total_steps"):
        curve(0)

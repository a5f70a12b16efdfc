"""Optimizers and LR schedules as sd-scripts names them: real short runs on the tiny SD1.5 model."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, read_events, run_cli, write_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainer.training.loop
from trainer.checks.advice import config_advice
from trainer.checks.service import answer
from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.config.schema.optimizer import OPTIMIZERS
from trainer.training.export import load_lora
from trainer.training.loop import train
from trainer.training.optim import (
    make_optimizer,
    make_scheduler,
    optimizer_class,
    optimizer_problems,
)

FAST = {"network_train_unet_only": True, "cache_latents": True}


@pytest.fixture
def captured(monkeypatch):
    """The optimizer each run builds, and d·lr per step as the optimizer holds it right after stepping."""
    seen: dict = {"optimizers": [], "d_lr": []}

    def capture(config, groups):
        optimizer = make_optimizer(config, groups)
        seen["optimizers"].append(optimizer)
        if "d" in optimizer.param_groups[0]:
            optimizer.register_step_post_hook(
                lambda opt, *_: seen["d_lr"].append([g["d"] * g["lr"] for g in opt.param_groups]))
        return optimizer

    monkeypatch.setattr(trainer.training.loop, "make_optimizer", capture)
    return seen


def run(tmp_path, make_config, name="run", **overrides):
    run_dir = tmp_path / name
    status = train(validate_config(make_config(**{**FAST, **overrides})), run_dir)
    events = read_events(run_dir)
    return status, [e for e in events if e["type"] == "step"], run_dir


# --- schedules: every step's LR equals the closed form --------------------------------------------------
def closed_form(name, s, warmup, total, cycles=1, power=1.0, lr_end=1e-7, base=1e-3):
    """The LR multiplier at 0-based scheduler step s (Hugging Face's formulas, which sd-scripts uses)."""
    if s < warmup:  # constant with a warmup behaves as constant_with_warmup
        return s / warmup
    progress = (s - warmup) / max(1, total - warmup)
    if name in ("constant", "constant_with_warmup"):
        return 1.0
    if name == "linear":
        return max(0.0, (total - s) / max(1, total - warmup))
    if name == "cosine":
        return max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))
    if name == "cosine_with_restarts":
        return 0.0 if progress >= 1 else max(0.0, 0.5 * (1 + math.cos(math.pi * ((cycles * progress) % 1))))
    if name == "polynomial":
        return ((base - lr_end) * (1 - progress) ** power + lr_end) / base
    raise AssertionError(name)


@pytest.mark.parametrize("name, options, warmup", [
    ("constant", {}, 0),
    ("constant", {"lr_warmup_steps": 3}, 3),  # constant with a warmup is constant_with_warmup
    ("constant_with_warmup", {"lr_warmup_steps": 0.25}, 2),  # a fraction: int(0.25 * 10)
    ("linear", {"lr_warmup_steps": 2}, 2),
    ("cosine", {"lr_warmup_steps": 2}, 2),
    ("cosine_with_restarts", {"lr_warmup_steps": 2, "lr_scheduler_num_cycles": 3}, 2),
    ("polynomial", {"lr_warmup_steps": 0.2, "lr_scheduler_power": 2.0, "lr_scheduler_args": ["lr_end=1e-5"]}, 2),
])
def test_each_step_lr_follows_the_schedule(tmp_path, make_config, name, options, warmup):
    _, steps, _ = run(tmp_path, make_config, max_train_steps=10, lr_scheduler=name, learning_rate=1e-3, **options)
    extra = {"cycles": options.get("lr_scheduler_num_cycles", 1), "power": options.get("lr_scheduler_power", 1.0),
             "lr_end": 1e-5 if name == "polynomial" else 1e-7}
    expected = [1e-3 * closed_form(name, s, warmup, 10, **extra) for s in range(10)]
    assert [e["step"] for e in steps] == list(range(1, 11))
    assert [e["lr"] for e in steps] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if name == "cosine_with_restarts":  # three falls to zero: the LR jumps back up twice
        assert sum(b > a for a, b in zip(expected[warmup:], expected[warmup + 1:])) == 2


def test_scheduler_class_from_lr_scheduler_type_with_args(tmp_path, make_config):
    _, steps, _ = run(tmp_path, make_config, max_train_steps=8, learning_rate=1e-3,
                      lr_scheduler_type="torch.optim.lr_scheduler.StepLR",
                      lr_scheduler_args=["step_size=3", "gamma=0.5"])
    assert [e["lr"] for e in steps] == pytest.approx([1e-3 * 0.5 ** (s // 3) for s in range(8)])


def test_adafactor_schedule_logs_the_relative_step(tmp_path, make_config):
    # Without parameter scaling, AdaFactor's warm-up init makes step t use min(1e-6 * t, 1 / sqrt(t)).
    _, steps, _ = run(tmp_path, make_config, max_train_steps=6, optimizer_type="AdaFactor", lr_scheduler="adafactor",
                      optimizer_args=["scale_parameter=False", "warmup_init=True"])
    assert [e["lr"] for e in steps] == pytest.approx([1e-6 * t for t in range(1, 7)])


# --- optimizers ---------------------------------------------------------------------------------------------
SS_OPTIMIZER = {  # what sd-scripts writes as ss_optimizer: the class path, sd-scripts' added args in parentheses
    "AdamW": "torch.optim.adamw.AdamW",
    "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "PagedAdamW": "bitsandbytes.optim.adamw.PagedAdamW",
    "PagedAdamW8bit": "bitsandbytes.optim.adamw.PagedAdamW8bit",
    "PagedAdamW32bit": "bitsandbytes.optim.adamw.PagedAdamW32bit",
    "Lion": "lion_pytorch.lion_pytorch.Lion",
    "Lion8bit": "bitsandbytes.optim.lion.Lion8bit",
    "PagedLion8bit": "bitsandbytes.optim.lion.PagedLion8bit",
    "SGDNesterov": "torch.optim.sgd.SGD(momentum=0.9)",
    "SGDNesterov8bit": "bitsandbytes.optim.sgd.SGD8bit(momentum=0.9)",
    "DAdaptation": "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
    "DAdaptAdamPreprint": "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
    "DAdaptAdam": "dadaptation.dadapt_adam.DAdaptAdam",
    "DAdaptAdaGrad": "dadaptation.dadapt_adagrad.DAdaptAdaGrad",
    "DAdaptAdan": "dadaptation.dadapt_adan.DAdaptAdan",
    "DAdaptAdanIP": "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP",
    "DAdaptLion": "dadaptation.dadapt_lion.DAdaptLion",
    "DAdaptSGD": "dadaptation.dadapt_sgd.DAdaptSGD",
    "Prodigy": "prodigyopt.prodigy.Prodigy",
    "AdaFactor": "transformers.optimization.Adafactor(relative_step=True)",
    "torch.optim.RAdam": "torch.optim.radam.RAdam",
}


def test_every_named_optimizer_is_covered():
    assert set(OPTIMIZERS) <= set(SS_OPTIMIZER)


@pytest.mark.parametrize("name", list(SS_OPTIMIZER))
def test_optimizer_trains_and_is_named_in_the_file(tmp_path, make_config, captured, name):
    adaptive = OPTIMIZERS.get(name) and OPTIMIZERS[name].adaptive
    spelling = name.lower() if name in OPTIMIZERS else name  # names match in any case, as in sd-scripts
    status, steps, _ = run(tmp_path, make_config, max_train_steps=2, optimizer_type=spelling,
                           learning_rate=1.0 if adaptive else 1e-3, lr_scheduler="constant")
    assert status == "completed" and len(steps) == 2
    tensors, meta = load_lora(tmp_path / "out" / "test.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))  # they start at 0
    assert meta["ss_optimizer"] == SS_OPTIMIZER[name]
    assert all(math.isfinite(e["loss"]) for e in steps)


def test_optimizer_args_reach_the_optimizer_and_ss_optimizer(tmp_path, make_config, captured):
    run(tmp_path, make_config, max_train_steps=1, optimizer_type="SGDNesterov",
        optimizer_args="weight_decay=0.05 momentum=0.8 dampening=0")  # the kohya_ss GUI's one-string form
    optimizer = captured["optimizers"][0]
    assert optimizer.defaults["nesterov"] is True
    assert (optimizer.defaults["weight_decay"], optimizer.param_groups[0]["momentum"]) == (0.05, 0.8)
    _, meta = load_lora(tmp_path / "out" / "test.safetensors")
    assert meta["ss_optimizer"] == "torch.optim.sgd.SGD(weight_decay=0.05,momentum=0.8,dampening=0)"


def test_tuple_betas_reach_adamw(tmp_path, make_config):
    config = validate_config(make_config(optimizer_args=["betas=(0.8,0.95)", "weight_decay=0.1"]))
    optimizer = make_optimizer(config, [{"name": "unet", "lr": 1e-3, "params": [torch.nn.Parameter(torch.ones(2))]}])
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.95) and optimizer.defaults["weight_decay"] == 0.1


@pytest.mark.parametrize("name", ["DAdaptAdam", "Prodigy"])
def test_adaptive_optimizers_log_d_times_lr(tmp_path, make_config, captured, name):
    _, steps, run_dir = run(tmp_path, make_config, max_train_steps=4, optimizer_type=name, learning_rate=0.5,
                            lr_scheduler="constant")
    d_lr = captured["d_lr"]
    assert len(d_lr) == 4
    for event, expected in zip(steps, d_lr):
        assert event["lr_effective"] == {"unet": pytest.approx(expected[0])}
        assert event["lr_effective"]["unet"] != event["lr"] == 0.5
    tb = EventAccumulator(str(run_dir / "tb")).Reload()
    assert [s.value for s in tb.Scalars("lr_effective/unet")] == pytest.approx([e[0] for e in d_lr], rel=1e-6)


def test_plain_optimizers_log_no_lr_effective(tmp_path, make_config):
    _, steps, _ = run(tmp_path, make_config, max_train_steps=1)
    assert "lr_effective" not in steps[0]


# --- clear errors and warnings ------------------------------------------------------------------------------
def problems_of(make_config, **overrides):
    with pytest.raises(ConfigError) as caught:
        validate_config(make_config(**overrides))
    return [str(problem) for problem in caught.value.problems]


def test_unknown_optimizer_suggests_the_name(make_config):
    assert problems_of(make_config, optimizer_type="Prodigi") == [
        "optimizer_type: 'Prodigi' is not valid: unknown optimizer; did you mean 'Prodigy'?"]
    assert validate_config(make_config(optimizer_type="adamw8BIT")).optimizer_type == "AdamW8bit"


def test_class_path_that_does_not_import_fails_before_the_first_step(tmp_path, make_config):
    config = validate_config(make_config(optimizer_type="torch.optim.NoSuchOpt"))
    assert [str(p) for p in optimizer_problems(config)] == ["optimizer_type: torch.optim has no NoSuchOpt; check the "
                                                            "spelling"]
    with pytest.raises(ConfigError, match=r"^optimizer_type: fancy_opt_pkg\.optim\.Fancy cannot be imported"):
        train(validate_config(make_config(optimizer_type="fancy_opt_pkg.optim.Fancy", **FAST)), tmp_path / "run")
    events = read_events(tmp_path / "run")
    assert not [e for e in events if e["type"] == "step"]
    assert events[-1]["status"] == "failed" and "optimizer_type" in events[-2]["message"]


def test_adafactor_schedule_needs_adafactor(make_config):
    [line] = problems_of(make_config, lr_scheduler="adafactor")
    assert line.startswith("lr_scheduler: 'adafactor'") and "optimizer_type is AdamW" in line
    [line] = problems_of(make_config, lr_scheduler="adafactor", optimizer_type="AdaFactor",
                         optimizer_args=["relative_step=False"])
    assert "relative_step=False" in line


def test_malformed_optimizer_args_name_the_key(make_config):
    [line] = problems_of(make_config, optimizer_args=["weight_decay"])
    assert line.startswith("optimizer_args:") and "'weight_decay' is not key=value" in line
    [line] = problems_of(make_config, optimizer_args=["betas=(0.9,"])
    assert line.startswith("optimizer_args:") and "'betas=(0.9,'" in line
    [line] = problems_of(make_config, lr_scheduler_args=["gamma=half"])
    assert line.startswith("lr_scheduler_args:")


def test_argument_the_optimizer_rejects_names_optimizer_args(make_config):
    config = validate_config(make_config(optimizer_args=["weigth_decay=0.1"]))
    with pytest.raises(ConfigError, match=r"^optimizer_args: AdamW does not accept .*weigth_decay"):
        make_optimizer(config, [{"name": "unet", "lr": 1e-3, "params": [torch.nn.Parameter(torch.ones(2))]}])


def test_warmup_rules(make_config):
    assert "lr_warmup_steps: 2.5 is neither" in problems_of(make_config, lr_warmup_steps=2.5)[0]
    [line] = problems_of(make_config, optimizer_type="AdaFactor", lr_warmup_steps=10)
    assert line.startswith("lr_warmup_steps:") and "warmup_init=True" in line


def test_adafactor_relative_step_takes_over_the_schedule(make_config):
    config = validate_config(make_config(optimizer_type="AdaFactor", lr_scheduler="cosine"))
    optimizer = make_optimizer(config, [{"name": "unet", "lr": 1e-3, "params": [torch.nn.Parameter(torch.ones(2))]}])
    assert type(make_scheduler(config, optimizer, 10)).__name__ == "AdafactorSchedule"
    assert any(w.startswith("lr_scheduler: AdaFactor's relative step") for w in advice_texts(config))


def advice_texts(config) -> list[str]:
    return [advice.en for advice in config_advice(config)]


def test_adaptive_optimizer_warnings_as_sd_scripts(make_config):
    config = validate_config(make_config(optimizer_type="Prodigy", unet_lr=1e-4, text_encoder_lr=5e-5))
    low, differ = advice_texts(config)
    assert low.startswith("optimizer_type Prodigy: learning rate 0.0001 is low") and "1.0" in low
    assert "unet_lr and text_encoder_lr differ" in differ
    assert advice_texts(validate_config(make_config(optimizer_type="Prodigy", learning_rate=1.0))) == []


def test_8bit_optimizer_trains_from_the_command_line(tmp_path, make_config):
    """A trainer process hides the optional packages its config does not use (common.libraries.hide_unused):
    the one the optimizer needs stays importable."""
    path = write_config(tmp_path / "c.yaml", make_config(optimizer_type="AdamW8bit", max_train_steps=1))
    result = run_cli("train", path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_lora(tmp_path / "out" / "test.safetensors")[1]["ss_optimizer"].startswith("bitsandbytes")
    # what bitsandbytes and torchao say while importing (kernels they cannot fetch offline) is not the run's log
    assert not any(word in result.stderr + result.stdout for word in ("kernels-community", "Failed to load"))


def test_checking_a_class_path_never_imports_it(tmp_path, make_config, monkeypatch):
    """A preset's class path is its author's code: `check` and the GUI's worker name it but do not import it;
    only the training does."""
    ran = tmp_path / "imported"
    (tmp_path / "danlu_side_effect.py").write_text(
        f"from pathlib import Path\nPath({str(ran)!r}).write_text('ran')\nclass Opt:\n    pass\n")
    settings = make_config(optimizer_type="danlu_side_effect.Opt", lr_scheduler_type="danlu_side_effect.Opt")
    config = write_config(tmp_path / "c.yaml", settings)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}
    check = subprocess.run([sys.executable, "-m", "trainer", "check", str(config)], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=env)
    assert check.returncode == 0, check.stderr
    assert "optimizer_type: danlu_side_effect.Opt is a class path" in check.stdout
    assert "lr_scheduler_type: danlu_side_effect.Opt is a class path" in check.stdout
    monkeypatch.syspath_prepend(str(tmp_path))
    for op, args in (("machine_problems", {"cuda": False}), ("lr_curve", {"total_steps": 4})):
        reply = answer(json.dumps({"op": op, "args": {"config": settings, **args}}))
        assert reply == {"result": [] if op == "machine_problems" else {}}
    assert not ran.exists() and "danlu_side_effect" not in sys.modules
    assert optimizer_class(validate_config(settings)).__name__ == "Opt" and ran.exists()  # the training imports it
    monkeypatch.delitem(sys.modules, "danlu_side_effect")

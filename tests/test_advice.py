"""trainer/advice.py: each suspicious combination gives its advice (en + zh), the defaults and the demo give none,
and `check` / the preflight print the English texts as warnings."""

import re

import pytest
import yaml

from trainer.__main__ import main
from trainer.checks.advice import Advice, config_advice, gpu_facts
from trainer.checks.preflight import run_preflight
from trainer.config import TrainConfig
from trainer.demo.prepare import DEMO_SETTINGS

CHINESE = re.compile(r"[\u4e00-\u9fff]")


def codes(family=None, cuda=None, bf16_supported=None, **settings) -> list[str]:
    config = TrainConfig(**settings)
    return [a.code for a in config_advice(config, family=family, cuda=cuda, bf16_supported=bf16_supported)]


def only(code: str, family=None, cuda=None, bf16_supported=None, **settings) -> Advice:
    found = [a for a in config_advice(TrainConfig(**settings), family, cuda, bf16_supported) if a.code == code]
    assert len(found) == 1, codes(family, cuda, bf16_supported, **settings)
    return found[0]


@pytest.mark.parametrize("cuda, bf16", [(None, None), (True, True)])
def test_defaults_give_no_advice(cuda, bf16):
    for family in (None, "sd1", "sd2", "sdxl"):
        assert codes(family, cuda, bf16) == []


def test_demo_config_gives_no_advice():
    assert codes("sd1", False, False, **DEMO_SETTINGS) == []


# Each case: the settings that should trigger the advice, and the nearest harmless settings.
CASES = {
    "alpha_above_dim": (dict(network_dim=16, network_alpha=32), dict(network_dim=16, network_alpha=16)),
    "conv_alpha_above_conv_dim": (dict(network_type="locon", conv_dim=4),  # conv_alpha empty: network_alpha 32
                                  dict(network_type="locon", conv_dim=4, conv_alpha=2)),
    "text_encoder_lr_above_unet_lr": (dict(unet_lr=1e-4, text_encoder_lr=2e-4),
                                      dict(unet_lr=1e-4, text_encoder_lr=5e-5)),
    "high_lr": (dict(unet_lr=1e-3, optimizer_type="AdamW8bit"), dict(unet_lr=5e-4, optimizer_type="AdamW8bit")),
    "adaptive_lr_not_1": (dict(optimizer_type="Prodigy", learning_rate=0.5),
                          dict(optimizer_type="Prodigy", learning_rate=1)),
    "adaptive_lrs_differ": (dict(optimizer_type="DAdaptAdam", learning_rate=1, text_encoder_lr=0.5),
                            dict(optimizer_type="DAdaptAdam", learning_rate=1)),
    "adafactor_relative_lr": (dict(optimizer_type="AdaFactor"), dict()),
    "adafactor_relative_part_lrs": (dict(optimizer_type="AdaFactor", unet_lr=1e-4), dict(optimizer_type="AdaFactor")),
    "adafactor_relative_scheduler": (dict(optimizer_type="AdaFactor"), dict(optimizer_type="AdaFactor",
                                                                            lr_scheduler="adafactor")),
    "adafactor_max_grad_norm": (dict(optimizer_type="AdaFactor", optimizer_args=["relative_step=False"]),
                                dict(optimizer_type="AdaFactor", optimizer_args=["relative_step=False"],
                                     max_grad_norm=0)),
    "adafactor_scheduler": (dict(optimizer_type="AdaFactor", optimizer_args=["relative_step=False"]),
                            dict(optimizer_type="AdaFactor", optimizer_args=["relative_step=False"],
                                 lr_scheduler="constant_with_warmup")),
    "adafactor_clip_threshold": (dict(optimizer_type="AdaFactor", optimizer_args=["relative_step=False",
                                                                                  "clip_threshold=2.0"]),
                                 dict(optimizer_type="AdaFactor", optimizer_args=["relative_step=False"])),
    "fp16_with_flux": (dict(model_family="flux", mixed_precision="fp16"),
                       dict(model_family="flux", mixed_precision="bf16")),
    "fp8_without_checkpointing": (dict(fp8_base=True, mixed_precision="bf16"),
                                  dict(fp8_base=True, mixed_precision="bf16", gradient_checkpointing=True)),
}


@pytest.mark.parametrize("code", CASES)
def test_each_advice_fires_on_its_combination_only(code):
    bad, good = CASES[code]
    advice = only(code, **bad)
    assert code not in codes(**good)
    assert advice.keys[0] in advice.en, "the English text names the key it is shown at"
    assert CHINESE.search(advice.zh) and advice.zh != advice.en
    assert advice.text("zh") == advice.zh and advice.text("en") == advice.en


def test_gpu_dependent_advice_needs_the_facts():
    assert only("paged_without_cuda", cuda=False, optimizer_type="PagedAdamW8bit").keys == ("optimizer_type",)
    assert codes(cuda=None, optimizer_type="PagedAdamW8bit") == codes(cuda=True, optimizer_type="PagedAdamW8bit") == []
    assert only("bf16_unsupported", cuda=True, bf16_supported=False, mixed_precision="bf16")
    assert codes(cuda=True, bf16_supported=True, mixed_precision="bf16") == []
    assert codes(cuda=None, bf16_supported=False, mixed_precision="bf16") == []
    assert gpu_facts() == (False, False)  # this test machine has no GPU


def test_fp16_with_flux_follows_the_resolved_family():
    assert "fp16_with_flux" in codes("flux", mixed_precision="fp16")  # model_family auto, the model is Flux
    assert "fp16_with_flux" not in codes("sdxl", mixed_precision="fp16")


def test_text_encoder_rate_above_unet_any_encoder_or_fallback():
    advice = only("text_encoder_lr_above_unet_lr", "sdxl", unet_lr=1e-4, text_encoder_lr=[5e-5, 3e-4])
    assert "3e-04" in advice.en or "0.0003" in advice.en
    # text_encoder_lr empty falls back to learning_rate, which is above unet_lr
    advice = only("text_encoder_lr_above_unet_lr", learning_rate=1e-3, unet_lr=1e-4)
    assert "empty, so learning_rate" in advice.en and advice.keys == ("text_encoder_lr", "unet_lr")
    # no text encoder trained: nothing to compare
    assert codes(unet_lr=1e-4, text_encoder_lr=1e-3, network_train_unet_only=True) == []
    assert codes("flux", unet_lr=1e-4, text_encoder_lr=1e-3, mixed_precision="bf16") == []  # Flux: unet only


def test_high_lr_counts_alpha_over_dim_and_the_optimizer_family():
    advice = only("high_lr", learning_rate=1e-3)
    assert advice.keys == ("learning_rate", "optimizer_type") and "1e-4" in advice.en
    assert "high_lr" not in codes(learning_rate=1e-3, network_alpha=16)  # alpha/dim halves it: 5e-4
    for optimizer in ("AdamW", "PagedAdamW32bit", "torch.optim.Adam", "bitsandbytes.optim.Adam8bit"):
        assert "high_lr" in codes(unet_lr=2e-3, optimizer_type=optimizer), optimizer
    assert "high_lr" in codes(unet_lr=5e-4, optimizer_type="Lion")
    assert "high_lr" not in codes(unet_lr=5e-4, optimizer_type="AdamW")
    for optimizer in ("SGDNesterov", "DAdaptAdam", "torch.optim.RAdam"):
        assert "high_lr" not in codes(unet_lr=2e-3, optimizer_type=optimizer), optimizer
    assert "high_lr" not in codes(unet_lr=2e-3, network_type="lokr")  # LyCORIS trains higher


def test_adaptive_rates_name_low_and_high():
    assert " is high;" in only("adaptive_lr_not_1", optimizer_type="Prodigy", learning_rate=2).en
    low = only("adaptive_lr_not_1", optimizer_type="Prodigy", learning_rate=1, unet_lr=0.1)
    assert low.keys[0] == "unet_lr" and " is low;" in low.en
    encoder_only = only("adaptive_lr_not_1", optimizer_type="Prodigy", learning_rate=1, text_encoder_lr=0.1,
                        network_train_text_encoder_only=True)
    assert encoder_only.keys[0] == "text_encoder_lr" and "set text_encoder_lr around 1.0" in encoder_only.en
    differ = only("adaptive_lrs_differ", "sdxl", optimizer_type="Prodigy", learning_rate=1,
                  text_encoder_lr=[1, 0.5])
    assert "(1, 0.5)" in differ.en


def write_config(tmp_path, make_config, **overrides):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(make_config(**overrides)), encoding="utf-8")
    return path


def test_check_prints_the_advice_as_warnings(tmp_path, make_config, capsys):
    config = TrainConfig(**make_config(network_dim=4, network_alpha=8))
    assert any(w.startswith("network_alpha 8 is above network_dim 4") for w in run_preflight(config).warnings)
    assert main(["check", str(write_config(tmp_path, make_config, optimizer_type="PagedAdamW8bit"))]) == 0
    assert "warning: optimizer_type PagedAdamW8bit: paging needs CUDA" in capsys.readouterr().out

"""The memory estimate (trainer/checks/memory.py): its stored parameter counts are the real architectures', its
parts follow them, `check` prints it, and it says what would make a config fit."""

import json

import pytest
from conftest import write_config
from model_sizes import all_sizes

from trainer.__main__ import main
from trainer.checks.memory import GIB, SIZES_FILE, estimate, fit_report, remedies, trained_parameters
from trainer.config.io import validate_config

FLUX_16GB = {"model_family": "flux", "mixed_precision": "bf16", "gradient_checkpointing": True,
             "cache_text_encoder_outputs": True, "optimizer_type": "AdamW8bit", "network_dim": 16}


@pytest.fixture(scope="module")
def real_sizes():
    """Counted now on the meta device from the shipped configs (no weights, no downloads)."""
    return all_sizes()


def test_stored_counts_are_the_real_architectures(real_sizes):
    assert json.loads(SIZES_FILE.read_text(encoding="utf-8")) == real_sizes
    # the published figures
    assert round(real_sizes["sd1"]["unet"]["params"] / 1e6) == 860
    assert round(real_sizes["sdxl"]["unet"]["params"] / 1e7) == 257
    assert round(real_sizes["flux"]["transformer"]["params"] / 1e8) == 119
    assert round(real_sizes["sd1"]["text_encoder"]["params"] / 1e6) == 123  # CLIP-L
    t5 = real_sizes["flux"]["text_encoder_2"]["params"] - 32128 * 4096  # less the token embedding
    assert round(t5 / 1e7) == 476
    # kohya's module counts of a LoRA: SD1.5 192 UNet + 72 text encoder, SDXL 722 UNet
    assert real_sizes["sd1"]["unet"]["lora"]["attention"]["layers"] == 192
    assert real_sizes["sdxl"]["unet"]["lora"]["attention"]["layers"] == 722


def test_parts_follow_the_counts(real_sizes):
    flux = real_sizes["flux"]["transformer"]
    bf16 = estimate(validate_config({**FLUX_16GB, "fp8_base": False}))
    assert bf16.part("denoiser").gib == pytest.approx(flux["params"] * 2 / GIB)
    fp8 = estimate(validate_config({**FLUX_16GB, "fp8_base": True}))
    assert fp8.part("denoiser").gib == pytest.approx((flux["linear_weights"] + 2 * (flux["params"] -
                                                                                   flux["linear_weights"])) / GIB)
    assert fp8.part("text_encoders").gib == 0 and fp8.part("vae").gib == 0  # cached, off the GPU
    encoders = [real_sizes["flux"][name] for name in ("text_encoder", "text_encoder_2")]
    assert fp8.caching_gib == pytest.approx(  # the encoders alone on the GPU, their Linear weights in fp8 too
        sum(e["linear_weights"] + 2 * (e["params"] - e["linear_weights"]) for e in encoders) / GIB + 0.5)
    unet_only = estimate(validate_config({**FLUX_16GB, "fp8_base_unet": True}))  # the encoders in bf16
    assert unet_only.caching_gib == pytest.approx(sum(e["params"] for e in encoders) * 2 / GIB + 0.5)
    assert unet_only.part("denoiser") == fp8.part("denoiser")
    sd1 = validate_config({"model_family": "sd1", "network_dim": 8, "optimizer_type": "AdamW"})
    lora = 8 * (real_sizes["sd1"]["unet"]["lora"]["attention"]["per_rank"] +
                real_sizes["sd1"]["text_encoder"]["lora"]["attention"]["per_rank"])
    assert trained_parameters(sd1, "sd1") == lora
    assert estimate(sd1).part("network").gib == pytest.approx(lora * (4 + 4 + 8) / GIB)  # weights, grads, AdamW
    assert estimate(validate_config({"model_family": "sd1", "cache_latents": False})).part("vae").gib == \
        pytest.approx(real_sizes["sd1"]["vae"]["params"] * 4 / GIB)


def test_what_makes_flux_fit_16gb():
    config = validate_config(FLUX_16GB)
    assert not estimate(config).fits(16)
    fixes = {tuple(fix.changes): fix for fix in remedies(config)}
    assert fixes[("fp8_base",)].estimate.fits(16)
    assert "✓ fp8_base: true" in fit_report(config, 16)


def test_flux_on_12gb_swaps_as_few_blocks_as_fit():
    config = validate_config({**FLUX_16GB, "fp8_base": True, "optimizer_type": "AdaFactor", "network_dim": 4})
    assert not estimate(config).fits(12)
    [swap] = [fix for fix in remedies(config, vram_gib=12) if "blocks_to_swap" in fix.changes]
    blocks = swap.changes["blocks_to_swap"]
    assert swap.estimate.fits(12)
    assert not estimate(config.model_copy(update={"blocks_to_swap": blocks - 1})).fits(12)
    offload = estimate(config.model_copy(update={"cpu_offload_checkpointing": True}))
    assert offload.part("activations").gib < estimate(config).part("activations").gib
    # cpu_offload_checkpointing cannot join blocks_to_swap (the schema's rule), so no combined remedy repeats it
    assert [fix.changes for fix in remedies(config, vram_gib=12)] == [{"blocks_to_swap": blocks},
                                                                      {"cpu_offload_checkpointing": True}]


def test_check_prints_the_estimate(tmp_path, make_config, capsys):
    path = write_config(tmp_path / "c.yaml", make_config(model_family="sd1"))
    assert main(["check", str(path), "--vram", "8"]) == 0
    out = capsys.readouterr().out
    assert "estimated peak GPU memory" in out and "base UNet: 859.5 M parameters in fp32" in out
    assert "CUDA context" in out and "fits in 8 GB of GPU memory" in out


def test_the_gui_shows_it_beside_the_plan_and_warns_before_start(make_config, monkeypatch):
    from ui import live
    from ui.review import review

    class Gpu:
        vram = 4.0

        def gpu_memory_gib(self) -> float:
            return self.vram

        def gpu_list(self) -> list:
            return []

    monkeypatch.setattr(live, "worker", Gpu)
    result = review({**make_config(), "model_family": "sd1", "resolution": "512", "train_batch_size": 4})
    shown = live.plan_markdown(result, "zh")
    assert result.plan.describe("zh") in shown and "估计显存峰值" in shown and "超出 4 GB 显存" in shown
    assert "gradient_checkpointing: true" in shown
    assert f"{estimate(result.config).peak_gib:.1f} GiB" in live.memory_warning(result, "en")
    Gpu.vram = 24.0
    assert live.memory_warning(result, "en") == ""

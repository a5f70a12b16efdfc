"""The presets Danlu ships (presets/*.yaml): complete bilingual metadata, only share-safe settings that differ from
the defaults, each passes `check` with the demo's files, and each trains the tiny model of its family."""

import re

import pytest
import safetensors
import torch
from accelerate.state import AcceleratorState

from trainer.checks.advice import config_advice
from trainer.checks.memory import estimate
from trainer.checks.preflight import run_preflight
from trainer.config.io import validate_config
from trainer.demo.prepare import ensure_demo_assets
from trainer.presets.format import apply_preset, changed_settings, read_preset, share_safe
from trainer.presets.library import SHIPPED_DIR
from trainer.training.loop import train
from trainer.training.optim import optimizer_class

PRESETS = sorted(SHIPPED_DIR.glob("*.yaml"))
ISSUE_PRESETS = {  # issue 7: what the library must offer
    "sd15-character", "sd15-style", "sdxl-character-12gb", "sdxl-character-24gb", "sdxl-style-12gb",
    "sdxl-style-24gb", "flux-dev-16gb", "flux-dev-24gb", "lr-finder-dadaptation", "lr-finder-prodigy", "demo",
    "flux-dev-12gb"}  # issue 14: Flux.1-dev on 12 GB
CPU_ONLY = {"demo"}  # runs on a CPU, so it names no GPU memory
TINY_MODEL = {"sd1": "tiny_sd1", "sdxl": "tiny_sdxl", "flux": "tiny_flux"}
# What a one-step CPU run of a tiny model needs instead of the preset's values; nothing else is touched.
TINY_RUN = {"resolution": "64,64", "bucket_reso_steps": 16, "min_bucket_reso": 64, "max_bucket_reso": 128,
            "max_train_epochs": None, "max_train_steps": 1, "save_every_n_epochs": None,
            "sample_every_n_epochs": None, "sample_at_first": False, "max_data_loader_n_workers": 0,
            "blocks_to_swap": None}  # the tiny Flux has too few blocks to swap (test_cpu_offload swaps a larger one)
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def stem(path) -> str:
    return path.stem


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """The demo's model and dataset; training writes latent caches next to these images, not the shared ones."""
    return ensure_demo_assets(tmp_path_factory.mktemp("demo"))


def runnable_here(config: dict) -> dict:
    # fp16 needs CUDA (preflight refuses it on a CPU); on this CPU-only machine such a preset runs in fp32.
    if config["mixed_precision"] == "fp16" and not torch.cuda.is_available():
        return {**config, "mixed_precision": "no"}
    return config


def test_the_library_has_the_issue_presets():
    assert {path.stem for path in PRESETS} == ISSUE_PRESETS


@pytest.mark.parametrize("path", PRESETS, ids=stem)
def test_preset_describes_itself_in_both_languages(path):
    preset = read_preset(path)
    assert path.read_text(encoding="utf-8").startswith("# Values follow ") or path.stem == "demo"  # its source
    assert preset.name == path.stem and preset.author == "Danlu"
    assert preset.model_family in TINY_MODEL
    assert (preset.vram_gb is None) == (path.stem in CPU_ONLY)
    for key in ("title", "description"):
        texts = getattr(preset, key)
        assert texts.get("en") and not CHINESE.search(texts["en"]), key
        assert CHINESE.search(texts.get("zh", "")), key


@pytest.mark.parametrize("path", PRESETS, ids=stem)
def test_preset_holds_only_share_safe_changes(path):
    settings = read_preset(path).settings
    assert "model_family" not in settings  # `check` then passes with any base model
    assert share_safe(settings) == (settings, [])  # no paths of this computer
    assert changed_settings(settings) == settings  # only values that differ from the defaults
    validated = validate_config(settings).model_dump()
    # typed as the schema keeps them (a YAML 1e-4 would be the string '1e-4')
    assert {key: validated[key] for key in settings} == settings


@pytest.mark.parametrize("path", PRESETS, ids=stem)
def test_preset_draws_no_advice_for_its_family(path):
    preset = read_preset(path)
    config = validate_config(apply_preset(preset, {})[0])
    advice = config_advice(config, preset.model_family, cuda=True, bf16_supported=True)
    assert [item.en for item in advice] == []  # nothing `check` or the GUI would question


@pytest.mark.parametrize("path", [path for path in PRESETS if path.stem not in CPU_ONLY], ids=stem)
def test_preset_fits_the_card_it_names(path):
    """The memory estimate of the preset's own resolution and batch, on its family's full-size model."""
    preset = read_preset(path)
    config = validate_config(apply_preset(preset, {})[0])
    result = estimate(config, preset.model_family)
    assert result.fits(preset.vram_gb), result.describe()


@pytest.mark.parametrize("path", PRESETS, ids=stem)
def test_preset_passes_check_with_the_demo_files(path, demo_files, tmp_path):
    model_dir, train_dir = demo_files
    machine = {"pretrained_model_name_or_path": str(model_dir), "train_data_dir": str(train_dir),
               "output_dir": str(tmp_path / "out")}
    config, _ = apply_preset(read_preset(path), machine)
    config = validate_config(runnable_here(config))
    optimizer_class(config)  # installed here
    assert run_preflight(config).plan.total_steps > 0


@pytest.mark.parametrize("path", PRESETS, ids=stem)
def test_preset_trains_the_tiny_model_of_its_family(path, request, demo_files, tmp_path):
    preset = read_preset(path)
    model = request.getfixturevalue(TINY_MODEL[preset.model_family])
    machine = {"pretrained_model_name_or_path": str(model), "train_data_dir": str(demo_files[1]),
               "output_dir": str(tmp_path / "out")}
    config, _ = apply_preset(preset, machine)
    config = validate_config(runnable_here({**config, **TINY_RUN}))
    AcceleratorState._reset_state(reset_partial_state=True)  # each preset picks its own mixed precision
    try:
        assert train(config, tmp_path / "run") == "completed"
    finally:  # and leaves none behind for the tests after it
        AcceleratorState._reset_state(reset_partial_state=True)
    with safetensors.safe_open(str(tmp_path / "out" / f"{config.output_name}.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    # the preset's network and optimizer reached the trained file
    assert metadata["ss_network_dim"] == str(config.network_dim)
    assert float(metadata["ss_network_alpha"]) == config.network_alpha
    assert optimizer_class(config).__name__ in metadata["ss_optimizer"]

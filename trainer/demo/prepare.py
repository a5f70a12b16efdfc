"""The offline demo: a tiny local model, a small synthetic dataset, and a config that trains on them."""

from __future__ import annotations

from pathlib import Path

from trainer.config import TrainConfig
from trainer.config.io import config_to_yaml
from trainer.demo.data import build_demo_dataset, demo_prompts
from trainer.presets.format import read_preset
from trainer.presets.library import SHIPPED_DIR

# The shipped demo preset is the one source of the demo's settings (the GUI lists it with the other presets).
DEMO_SETTINGS = read_preset(SHIPPED_DIR / "demo.yaml").settings


def ensure_demo_assets(root: Path) -> tuple[Path, Path]:
    """Build the demo model and dataset under root once; later calls reuse them."""
    model_dir, data_dir = root / "model", root / "data"
    if not (model_dir / "model_index.json").is_file():
        from trainer.common.libraries import quiet_libraries
        from trainer.families.tiny_sd import build_tiny_sd  # diffusers: only when the model is built

        quiet_libraries()  # no progress bars of saving the model before the run's log
        build_tiny_sd(model_dir, "sd1")
    if not (data_dir / "train").is_dir():
        build_demo_dataset(data_dir)
    return model_dir, data_dir / "train"


def demo_config(root: Path) -> TrainConfig:
    """The demo's config; also written to root/config.yaml as an example to copy."""
    model_dir, train_dir = ensure_demo_assets(root)
    config = TrainConfig(pretrained_model_name_or_path=str(model_dir), train_data_dir=str(train_dir),
                         output_dir=str(root / "outputs"), sample_prompts=demo_prompts(), **DEMO_SETTINGS)
    (root / "config.yaml").write_text(config_to_yaml(config), encoding="utf-8")
    return config

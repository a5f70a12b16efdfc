"""The offline demo: a tiny local model, a small synthetic dataset, and a config that trains on them."""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig
from .config_io import config_to_yaml
from .demo_data import build_demo_dataset, demo_prompts
from .tiny_models import build_tiny_sd

DEMO_SETTINGS = dict(
    output_name="demo_lora", overwrite=True, resolution="96", bucket_reso_steps=16, min_bucket_reso=64,
    max_bucket_reso=128, train_batch_size=2, max_train_epochs=10, network_dim=8, network_alpha=4,
    learning_rate=1e-3, lr_scheduler="cosine", mixed_precision="no", max_data_loader_n_workers=0,
    save_every_n_epochs=5, sample_every_n_epochs=2, sample_at_first=True, sample_sampler="euler_a",
    training_comment="Danlu demo run on a tiny random model",
)


def ensure_demo_assets(root: Path) -> tuple[Path, Path]:
    """Build the demo model and dataset under root once; later calls reuse them."""
    model_dir, data_dir = root / "model", root / "data"
    if not (model_dir / "model_index.json").is_file():
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

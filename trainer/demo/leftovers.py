"""The demo's own settings after the user moves on: they suit a tiny random model on 96 px shapes (max_bucket_reso
128, resolution 96, overwrite, ...), and a user who keeps the demo's form and picks their own base model or dataset
must not train at 96 px without noticing. Torch-free: the GUI asks on every change of those two paths.

The form is still the demo's while it carries the demo's training_comment (DEMO_MARK), a text nobody types. Once
its base model or dataset is no longer the demo's, every setting of presets/demo.yaml (and the demo's sample
prompts) that still holds the demo's value goes back to the schema default; a value the user changed stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.demo.data import demo_prompts
from trainer.demo.prepare import DEMO_SETTINGS

DEMO_MARK = "training_comment"
# The keys the demo builds itself (trainer/demo/prepare.demo_config), besides its preset's settings.
DEMO_PATHS = {"pretrained_model_name_or_path": "model", "train_data_dir": "data/train"}


def demo_settings() -> dict[str, Any]:
    """Everything the demo sets apart from its paths: the shipped demo preset's settings and its prompts."""
    return {**DEMO_SETTINGS, "sample_prompts": demo_prompts()}


def demo_leftovers(form: dict[str, Any], demo_root: Path) -> dict[str, Any]:
    """{key: default} for the demo's settings to reset now that `form` trains on another base model or dataset
    than the demo's under demo_root; {} while the form is the demo's, or no longer carries the demo's mark."""
    demo = demo_settings()
    if form.get(DEMO_MARK) != demo[DEMO_MARK] or not _left(form, demo_root):
        return {}
    defaults = {name: info.default for name, info in TrainConfig.model_fields.items()}
    return {key: defaults[key] for key, value in demo.items() if form.get(key) == value and value != defaults[key]}


def _left(form: dict[str, Any], demo_root: Path) -> bool:
    """The base model or the dataset is set, and not the demo's."""
    for key, place in DEMO_PATHS.items():
        value = form.get(key)
        if value and Path(value).expanduser().resolve() != (demo_root / place).resolve():
            return True
    return False

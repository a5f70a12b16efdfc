"""kohya's ss_* metadata: what A1111, Forge, ComfyUI and civitai read from a LoRA file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trainer.adapters.sd_scripts import network_args_metadata
from trainer.config import TrainConfig, field_info
from trainer.dataset.caption_edit import count_tags
from trainer.dataset.plan import StepPlan
from trainer.dataset.scan import DatasetScan


def config_metadata(config: TrainConfig) -> dict[str, str]:
    """ss_<key> for every schema field marked as metadata (paths and private values are not)."""
    keys = {name: field_info(name)["metadata"] for name in TrainConfig.model_fields}
    return {(key if isinstance(key, str) else f"ss_{name}"): _text(getattr(config, name))
            for name, key in keys.items() if key}


def tag_frequency(scan: DatasetScan) -> dict[str, dict[str, int]]:
    """Per training folder, how often each comma-separated tag occurs in its captions."""
    frequency: dict[str, dict[str, int]] = {}
    for subset in scan.subsets:
        if subset.is_reg:
            continue
        frequency[subset.path.name] = dict(count_tags(image.caption for image in subset.images))
    return frequency


def build_metadata(config: TrainConfig, plan: StepPlan, scan: DatasetScan, *, model: dict[str, str],
                   optimizer: str, session_id: str, started_at: float) -> dict[str, str]:
    """Metadata that stays the same for every file of one run; `for_save` adds what changes per file.
    `model` holds what the model family says of itself (ss_base_model_version, ss_v2, ...)."""
    meta = config_metadata(config)
    width, height = config.resolution_wh
    meta.update({
        "ss_session_id": session_id,
        "ss_training_started_at": str(started_at),
        "ss_sd_model_name": Path(config.pretrained_model_name_or_path).name,
        **model,
        "ss_learning_rate": str(config.learning_rate),
        "ss_unet_lr": str(config.effective_unet_lr) if config.train_unet else "None",
        "ss_text_encoder_lr": config.text_encoder_lr_text if config.train_text_encoder else "None",
        "ss_optimizer": optimizer,
        "ss_resolution": f"({width}, {height})",
        "ss_num_train_images": str(plan.train_images),
        "ss_num_reg_images": str(plan.reg_images),
        "ss_num_batches_per_epoch": str(plan.batches_per_epoch),
        "ss_num_epochs": str(plan.epochs),
        "ss_max_train_steps": str(plan.total_steps),
        "ss_batch_size_per_device": str(config.train_batch_size),
        "ss_total_batch_size": str(config.train_batch_size * config.gradient_accumulation_steps),
        "ss_tag_frequency": json.dumps(tag_frequency(scan), ensure_ascii=False),
        "ss_dataset_dirs": json.dumps({f.name: {"n_repeats": f.repeats, "img_count": f.images}
                                       for f in plan.folders if not f.is_reg}, ensure_ascii=False),
        "ss_reg_dataset_dirs": json.dumps({f.name: {"n_repeats": f.repeats, "img_count": f.images}
                                           for f in plan.folders if f.is_reg}, ensure_ascii=False),
        "ss_bucket_info": json.dumps({"buckets": {f"{w}x{h}": n for (w, h), n in plan.buckets.items()}}),
        **network_args_metadata(config),
    })
    return meta


def for_save(meta: dict[str, str], epoch: int, step: int) -> dict[str, str]:
    return {**meta, "ss_epoch": str(epoch), "ss_steps": str(step),
            "ss_training_finished_at": str(time.time())}


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)

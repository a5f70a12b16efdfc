"""The training config: one flat schema with kohya sd-scripts' key names.

Each area of the schema lives in trainer/schema/; every field carries its GUI placement and help text, so
the CLI, the GUI form, presets, the ss_* metadata and docs/parameters*.md all derive from TrainConfig.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import parse_resolution
from trainer.config.schema.data import DataFields
from trainer.config.schema.flux import FluxFields
from trainer.config.schema.launch import LaunchFields
from trainer.config.schema.loss import LossFields
from trainer.config.schema.network import NetworkFields
from trainer.config.schema.optimizer import OptimizerFields
from trainer.config.schema.paths import PathsFields
from trainer.config.schema.samples import SAMPLERS, SampleFields
from trainer.config.schema.steps import StepsFields
from trainer.config.schema.text import TextFields
from trainer.families.table import FAMILIES

__all__ = ["SAMPLERS", "TrainConfig", "field_info", "parse_resolution"]


# pydantic lists the fields of the last base first: this order is the order of the form and the docs.
class TrainConfig(LaunchFields, FluxFields, SampleFields, DataFields, TextFields, LossFields, OptimizerFields,
                  NetworkFields, StepsFields, PathsFields):
    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.network_train_unet_only and self.network_train_text_encoder_only:
            raise RuleError("network_train_unet_only and network_train_text_encoder_only: choose at most one",
                            "network_train_unet_only", "network_train_text_encoder_only",
                            zh="network_train_unet_only 和 network_train_text_encoder_only 最多只能选一个")
        if self.max_train_epochs is None and self.max_train_steps is None:
            raise RuleError("max_train_epochs and max_train_steps are both empty: set at least one",
                            "max_train_epochs", "max_train_steps",
                            zh="max_train_epochs 和 max_train_steps 都是空的：请至少填一个")
        if self.min_bucket_reso > self.max_bucket_reso:
            raise RuleError(f"min_bucket_reso ({self.min_bucket_reso}) is larger than max_bucket_reso "
                            f"({self.max_bucket_reso})", "min_bucket_reso", "max_bucket_reso",
                            zh=f"min_bucket_reso（{self.min_bucket_reso}）大于 "
                            f"max_bucket_reso（{self.max_bucket_reso}）")
        return self

    # --- Derived values ---------------------------------------------------------------------------
    @property
    def resolution_wh(self) -> tuple[int, int]:
        return parse_resolution(self.resolution)

    @property
    def train_unet(self) -> bool:
        return not self.network_train_text_encoder_only

    @property
    def train_text_encoder(self) -> bool:
        """None = the family's habit (families/table.py: Flux trains the transformer only; model_family is resolved
        at load, auto trains it), and as in sd-scripts cached text-encoder outputs imply a frozen text encoder."""
        if self.network_train_unet_only is None:
            family = FAMILIES.get(self.model_family)
            return (family is None or family.trains_text_encoder) and not self.text_encoder_outputs_cached
        return not self.network_train_unet_only

    def trained_text_encoders(self, family: str) -> list[str]:
        """The components of the family's text encoders that get a LoRA: none without train_text_encoder, and only
        those whose opt_in flag is on (Flux's T5 trains only with train_t5xxl)."""
        spec = FAMILIES[family]
        return [encoder.component for encoder in spec.text_encoders
                if self.train_text_encoder and (encoder.opt_in is None or getattr(self, encoder.opt_in))]

    @property
    def fp8_denoiser(self) -> bool:
        """The UNet/transformer's Linear and conv weights stored in float8 (fp8_base or fp8_base_unet)."""
        return self.fp8_base or self.fp8_base_unet

    @property
    def fp8_text_encoders(self) -> bool:
        """The frozen text encoders stored in float8 too: fp8_base without fp8_base_unet, as in sd-scripts."""
        return self.fp8_base and not self.fp8_base_unet

    @property
    def effective_unet_lr(self) -> float:
        return self.unet_lr or self.learning_rate

    @property
    def text_encoder_lr_text(self) -> str:
        """text_encoder_lr as written to ss_text_encoder_lr: one value, or the list of two."""
        rates = self.text_encoder_lrs(len(self.text_encoder_lr) if isinstance(self.text_encoder_lr, list) else 1)
        return str(rates[0]) if len(rates) == 1 else str(rates)

    def text_encoder_lrs(self, encoders: int) -> list[float]:
        """One learning rate per text encoder: a single text_encoder_lr serves all, a list gives each its own."""
        rates = self.text_encoder_lr if isinstance(self.text_encoder_lr, list) else [self.text_encoder_lr]
        rates = [rate or self.learning_rate for rate in rates]
        return (rates * encoders)[:encoders] if len(rates) == 1 else rates[:encoders]


def field_info(name: str) -> dict[str, Any]:
    """GUI placement, flags and Chinese help of one field (tab, group, advanced, metadata, help_zh)."""
    return dict(TrainConfig.model_fields[name].json_schema_extra or {})

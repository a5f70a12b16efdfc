"""LoCon (kohya's C3Lier, LyCORIS's algo=locon): LoRA on the UNet's 3x3 convs as well, at conv_dim/conv_alpha."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.adapters.lora import LoraType
from trainer.adapters.spec import Evidence, FileFacts


@dataclass(frozen=True)
class LoCon(LoraType):
    def recognises(self, facts: FileFacts) -> Evidence:
        return Evidence.SHAPE if facts.conv or facts.args.get("algo") == self.algo else Evidence.NONE


LOCON = LoCon("locon", "LoCon", "networks.lora", algo="locon", convs=True)

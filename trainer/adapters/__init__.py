"""Network types (LoRA, LoCon, LoHa, LoKr, DyLoRA): each type's settings, peft layers and file keys."""

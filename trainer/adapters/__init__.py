"""Network types (LoRA, LoCon, LoHa, LoKr, DyLoRA), one module each, registered in types.py: each type's settings,
peft layers, hooks and file keys; layers.py holds the peft and kohya-key helpers they share."""

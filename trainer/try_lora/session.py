"""The base model loaded once, LoRA files swapped in and out of its weights, one picture per call.

A LoRA is applied as `lora merge` applies it (lora_tools/merge.py: one weight-delta code for LoRA, LoCon, LoHa,
LoKr and DyLoRA files, kohya and LyCORIS keys, diffusers-layout files, Flux's fused modules): W + s * dW, summed in
float32. The layers a file touches are copied first; `use` restores them before the next file, so strength 0 (or
no file) is the base model bit for bit, and no pipeline is rebuilt per cell.

On a GPU the model is in bf16 (fp16 where bf16 is not supported) under autocast, as the training's previews; the
VAE stays float32 and decodes outside autocast (ModelFamily.decode). On a CPU everything is float32.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.config.io import load_config
from trainer.families.base import ModelFamily
from trainer.families.registry import load_family
from trainer.lora_tools.keys import LoraFile, read_lora
from trainer.lora_tools.merge import add_delta, lora_updates
from trainer.lora_tools.targets import adapter_parts, module_table
from trainer.training.sampling import SamplePrompt
from trainer.try_lora.runs import RUN_CONFIG

# Settings of a run's config that make no sense when only sampling: fp8 storage and block swapping.
NOT_FOR_SAMPLING = {"fp8_base": False, "fp8_base_unet": False, "blocks_to_swap": None}


def pick_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.device("cpu"), torch.float32


def sampling_config(base: str, run: str | None) -> TrainConfig:
    """The run's config (its clip_skip, v-prediction, Flux files ...) with `base` as its model, or a plain one."""
    if run:
        config = load_config(Path(run) / RUN_CONFIG)
        update = {**NOT_FOR_SAMPLING, "pretrained_model_name_or_path": base or config.pretrained_model_name_or_path}
        return config.model_copy(update=update)
    return TrainConfig(pretrained_model_name_or_path=base)


class TrySession:
    """One base model; `use(file, strength)` then `render(prompt, seed, sampler)`."""

    def __init__(self, config: TrainConfig, device: torch.device | None = None, dtype: torch.dtype | None = None):
        picked = pick_device()
        self.device, self.dtype = device or picked[0], dtype or picked[1]
        self.config = config
        self.model: ModelFamily = load_family(config, self.dtype)
        self.model.prepare()  # the sampling schedule as the training's previews have it (v-prediction, ...)
        for name in (self.model.denoiser_name, *self.model.text_encoder_names, "vae"):
            self.model.components[name].to(self.device).eval()
        parts = adapter_parts(self.model.name, config.pretrained_model_name_or_path, self.model.components)
        self.table = module_table(self.model.name, parts)
        self.originals: dict[torch.nn.Module, torch.Tensor] = {}  # layer -> its base weight, on the CPU
        self.current: tuple[str, float] | None = None
        self.files: dict[str, tuple[tuple[int, int], LoraFile]] = {}  # path -> (its mtime and size, the file)
        self.grids = 0  # grids rendered with this model (trainer/try_lora/serve.py keeps it between grids)

    @property
    def family(self) -> str:
        return self.model.name

    def read(self, path: str) -> LoraFile:
        """A LoRA file, read once and kept in CPU memory (read again once it changed on disk: a training that saved
        it anew); one of another family or with modules that name no layer of this model is refused here (call it
        for every file before rendering)."""
        stat = Path(path).stat()
        state = (stat.st_mtime_ns, stat.st_size)
        if self.files.get(path, (None,))[0] != state:  # the model is the base here (keep_files, use)
            lora = read_lora(Path(path))
            lora_updates(self.family, self.model.components, self.table, self._on_device(lora))  # may refuse
            self.files[path] = state, lora
        return self.files[path][1]

    def keep_files(self, paths: set[str]) -> None:
        """Back to the base model, and forget the files read for earlier grids but `paths` (the model kept loaded
        does not hoard them)."""
        self.use(None)
        self.files = {path: entry for path, entry in self.files.items() if path in paths}

    def _on_device(self, lora: LoraFile) -> LoraFile:
        """A copy with its tensors on the model's device, where its deltas are computed (one file at a time)."""
        return replace(lora, tensors={key: value.to(self.device) for key, value in lora.tensors.items()})

    @torch.no_grad()
    def use(self, path: str | None, strength: float = 1.0) -> None:
        """The base model plus one file at `strength` (None or 0: the base model alone)."""
        wanted = None if path is None or strength == 0 else (path, float(strength))
        if wanted == self.current:
            return
        self._restore()
        if wanted is not None:
            lora = self._on_device(self.read(path))
            for _, layers, delta in lora_updates(self.family, self.model.components, self.table, lora):
                for layer in layers:
                    self.originals.setdefault(layer, layer.weight.detach().to("cpu", copy=True))
                add_delta(layers, delta, strength, lora)
        self.current = wanted

    def _restore(self) -> None:
        for layer, weight in self.originals.items():
            layer.weight.copy_(weight.to(layer.weight.device))
        self.originals.clear()
        self.current = None

    @torch.no_grad()
    def render(self, spec: SamplePrompt, seed: int, sampler: str) -> np.ndarray:
        """One HxWx3 uint8 picture, as a training preview is made (trainer/training/loop.py's _sample_one)."""
        model = self.model
        autocast = torch.autocast(self.device.type, self.dtype, enabled=self.device.type == "cuda")
        with autocast:
            cond, uncond = (model.encode_text([text]) for text in (spec.prompt, spec.negative))
            return model.generate(spec, cond, uncond, seed, sampler)

"""Run tab: preview images during training."""

from __future__ import annotations

from typing import Literal

from trainer.config.schema.base import SchemaPart, field

# sd-scripts' sample_sampler names -> the diffusers scheduler class that implements each, with its options.
_BASE_SAMPLERS = {
    "ddim": ("DDIMScheduler", {}), "pndm": ("PNDMScheduler", {}), "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}), "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}), "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
}
SAMPLERS = {**_BASE_SAMPLERS, **{f"k_{name}": _BASE_SAMPLERS[name]
                                 for name in ("lms", "euler", "euler_a", "dpm_2", "dpm_2_a")}}


class SampleFields(SchemaPart):
    sample_prompts: str | list[str] | None = field(
        None, "run", "samples",
        "Preview prompts: a text file with one prompt a line, or a list. Options after the prompt: --n negative "
        "--w width --h height --s steps --l guidance --d seed.",
        "预览提示词：每行一个提示词的文本文件，或一个列表。提示词后可加选项：--n 反向提示词 --w 宽 --h 高 "
        "--s 步数 --l 引导强度 --d 种子。", metadata=False, machine=True, path="file")
    sample_every_n_epochs: int | None = field(
        None, "run", "samples", "Make previews every N epochs.", "每 N 轮生成一次预览图。", ge=1)
    sample_every_n_steps: int | None = field(
        None, "run", "samples", "Make previews every N steps.", "每 N 步生成一次预览图。", ge=1)
    sample_sampler: Literal[tuple(SAMPLERS)] = field(  # type: ignore[valid-type]
        "euler_a", "run", "samples", "Sampler for the previews.", "预览图使用的采样器。")
    sample_at_first: bool = field(
        False, "run", "samples", "Make previews before the first step too, to see the base model's look.",
        "训练开始前也生成一次预览，用来对比底模原本的样子。")

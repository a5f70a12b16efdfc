"""Model effect tab, flux group: how Flux.1 is trained (noise levels, prediction, guidance, T5-XXL).

Keys and defaults are sd-scripts' flux_train_network.py; trainer/families/flux_math.py implements them.
None of them changes an SD 1.x/2.x/SDXL training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field

# The single source of the choices; trainer/families/flux_math.py implements each of them.
TIMESTEP_SAMPLINGS = ("sigma", "uniform", "sigmoid", "shift", "flux_shift")
MODEL_PREDICTION_TYPES = ("raw", "additive", "sigma_scaled")
# sd-scripts accepts "uniform" and "none" as the same thing (uniform density, weight 1).
WEIGHTING_SCHEMES = ("uniform", "none", "sigma_sqrt", "logit_normal", "mode", "cosmap")

# Flux.1 dev's T5-XXL token budget, the most FluxPipeline accepts (schnell: 256; trainer/families/flux.py).
T5_MAX_LENGTH = 512
FLUX_ONLY = "Flux.1 only."
FLUX_ONLY_ZH = "仅用于 Flux.1。"


class FluxFields(SchemaPart):
    timestep_sampling: Literal[TIMESTEP_SAMPLINGS] = field(  # type: ignore[valid-type]
        "sigma", "effect", "flux",
        f"{FLUX_ONLY} How the noise level of each training step is chosen. sigma: from the shifted schedule "
        "(discrete_flow_shift) at a point drawn by weighting_scheme; uniform: every level equally often; "
        "sigmoid: mostly middle levels (sigmoid_scale widens it); shift: sigmoid, then moved towards more noise "
        "by discrete_flow_shift; flux_shift: sigmoid moved by Flux's own resolution-dependent shift (larger "
        "images get more noise). More high-noise steps teach composition, shapes and colour; more low-noise "
        "steps teach texture and detail. Most Flux LoRA guides use shift or flux_shift.",
        f"{FLUX_ONLY_ZH}每个训练步的噪声强度如何选取。sigma：按 weighting_scheme 抽一个位置，从经 "
        "discrete_flow_shift 偏移后的调度表中取值；uniform：各强度同样多；sigmoid：多取中间强度（sigmoid_scale "
        "越大越分散）；shift：先按 sigmoid 取，再按 discrete_flow_shift 偏向高噪声；flux_shift：按 Flux 自带的、"
        "随分辨率变化的偏移（图越大噪声越多）。高噪声步多，学到的是构图、形状和颜色；低噪声步多，学到的是"
        "质感和细节。大多数 Flux LoRA 教程用 shift 或 flux_shift。")
    sigmoid_scale: float = field(
        1.0, "effect", "flux",
        f"{FLUX_ONLY} Spread of the sigmoid, shift and flux_shift samplings: 1 keeps most steps at middle noise; "
        "larger values (e.g. 2-3) reach the very noisy and almost clean ends more often, closer to uniform.",
        f"{FLUX_ONLY_ZH}sigmoid、shift 和 flux_shift 取样的分散程度：1 时多数步落在中等噪声；"
        "更大（如 2-3）时更常取到极高和极低噪声，接近均匀分布。", advanced=True, gt=0)
    discrete_flow_shift: float = field(
        3.0, "effect", "flux",
        f"{FLUX_ONLY} How far timestep_sampling shift and sigma move training towards high noise: "
        "s' = shift*s / (1 + (shift-1)*s). 1 = no shift; 3 (default) or 3.1582 (a common Flux value) spends "
        "more steps on composition and overall look; lower values favour fine detail.",
        f"{FLUX_ONLY_ZH}timestep_sampling 为 shift 和 sigma 时，把训练往高噪声方向偏移多少："
        "s' = shift*s / (1 + (shift-1)*s)。1 表示不偏移；3（默认）或 3.1582（Flux 常用值）把更多步数用在构图"
        "和整体观感上；更小的值偏重细节。", advanced=True, gt=0)
    model_prediction_type: Literal[MODEL_PREDICTION_TYPES] = field(  # type: ignore[valid-type]
        "sigma_scaled", "effect", "flux",
        f"{FLUX_ONLY} How the transformer's output enters the loss. raw: compared as is with the flow target "
        "(noise minus image), what Flux itself learned; many Flux guides recommend it. additive: output plus "
        "noisy input. sigma_scaled (sd-scripts' default): noisy input minus noise level x output, with the "
        "loss weighting of weighting_scheme.",
        f"{FLUX_ONLY_ZH}transformer 的输出如何进入损失。raw：直接与流目标（噪声减图像）比较，与 Flux 本身的"
        "训练方式一致，许多 Flux 教程推荐它。additive：输出加上带噪输入。sigma_scaled（sd-scripts 默认）："
        "带噪输入减去噪声强度×输出，并使用 weighting_scheme 的损失加权。", advanced=True)
    guidance_scale: float = field(
        3.5, "effect", "flux",
        f"{FLUX_ONLY} The guidance value given to a guidance-distilled model (Flux.1 dev) while training; "
        "schnell ignores it. 3.5 matches dev's usual generation setting; 1.0 is also common and tends to keep "
        "the LoRA usable at low guidance. It is not classifier-free guidance: training stays one pass per step.",
        f"{FLUX_ONLY_ZH}训练时传给引导蒸馏模型（Flux.1 dev）的引导值；schnell 会忽略它。3.5 与 dev 常用的"
        "出图设置一致；1.0 也很常见，训练出的 LoRA 在低引导下更好用。这不是无分类器引导（CFG），"
        "训练每步仍只计算一次。")
    weighting_scheme: Literal[WEIGHTING_SCHEMES] = field(  # type: ignore[valid-type]
        "uniform", "effect", "flux",
        f"{FLUX_ONLY} SD3-style scheme. With timestep_sampling sigma it shapes which noise levels are drawn: "
        "uniform/none evenly, logit_normal mostly the middle (logit_mean, logit_std), mode with a peak set by "
        "mode_scale. With model_prediction_type sigma_scaled, sigma_sqrt and cosmap weigh the loss per step "
        "(sigma_sqrt strongly favours the low-noise, detail steps; cosmap the middle ones).",
        f"{FLUX_ONLY_ZH}SD3 式方案。timestep_sampling 为 sigma 时决定抽取哪些噪声强度：uniform/none 均匀，"
        "logit_normal 集中在中间（由 logit_mean、logit_std 控制），mode 的峰值由 mode_scale 决定。"
        "model_prediction_type 为 sigma_scaled 时，sigma_sqrt 和 cosmap 按步给损失加权（sigma_sqrt 强烈偏重"
        "低噪声的细节步，cosmap 偏重中间步）。", advanced=True)
    logit_mean: float = field(
        0.0, "effect", "flux",
        f"{FLUX_ONLY} Centre of the logit_normal sampling: 0 = middle noise; negative values train more "
        "high-noise steps (composition), positive ones more low-noise steps (detail).",
        f"{FLUX_ONLY_ZH}logit_normal 取样的中心：0 为中等噪声；负值训练更多高噪声步（构图），"
        "正值训练更多低噪声步（细节）。", advanced=True)
    logit_std: float = field(
        1.0, "effect", "flux",
        f"{FLUX_ONLY} Spread of the logit_normal sampling: larger values reach the extremes more often.",
        f"{FLUX_ONLY_ZH}logit_normal 取样的分散程度：越大越常取到极端噪声强度。", advanced=True, gt=0)
    mode_scale: float = field(
        1.29, "effect", "flux",
        f"{FLUX_ONLY} Shape of the mode sampling (SD3 paper): 0 is uniform, positive values concentrate on "
        "middle noise levels. Keep it between -1 and about 1.75.",
        f"{FLUX_ONLY_ZH}mode 取样的形状（SD3 论文）：0 为均匀，正值集中在中等噪声。保持在 -1 到约 1.75 之间。",
        advanced=True, ge=-1, le=1.75)
    t5xxl_max_token_length: int | None = field(
        None, "effect", "flux",
        f"{FLUX_ONLY} How many caption tokens T5-XXL reads. Empty = 512 for dev, 256 for schnell (what they "
        "were trained with). Lower saves memory and time with short captions; text after the limit is not "
        "learned.",
        f"{FLUX_ONLY_ZH}T5-XXL 读取的标注 token 数。留空时 dev 为 512、schnell 为 256（与其训练时一致）。"
        "标注较短时调低可省显存和时间；超出部分学不到。", advanced=True, ge=1, le=T5_MAX_LENGTH)
    apply_t5_attn_mask: bool = field(
        False, "effect", "flux",
        f"{FLUX_ONLY} Mask the padding after the caption in T5-XXL and in the transformer's attention, so "
        "only real caption tokens count. Use the same setting when generating if your tool offers it.",
        f"{FLUX_ONLY_ZH}在 T5-XXL 和 transformer 的注意力中屏蔽标注后面的填充部分，只让真实的标注 token "
        "起作用。出图工具若有此选项，请保持一致。", advanced=True)
    train_t5xxl: bool = field(
        False, "effect", "flux",
        f"{FLUX_ONLY} Also train a LoRA on the T5-XXL text encoder (sd-scripts' network_args train_t5xxl). "
        "Rarely needed and costs much memory; needs the text encoder trained (not network_train_unet_only, "
        "no cached text-encoder outputs).",
        f"{FLUX_ONLY_ZH}同时给 T5-XXL 文本编码器训练 LoRA（即 sd-scripts 的 network_args train_t5xxl）。"
        "很少需要，且非常占显存；要求训练文本编码器（不能开 network_train_unet_only，也不能缓存文本编码器输出）。",
        advanced=True)

    @model_validator(mode="after")
    def _flux_rules(self):
        if self.weighting_scheme in ("logit_normal", "mode") and self.timestep_sampling != "sigma":
            raise RuleError(f"weighting_scheme {self.weighting_scheme} shapes only timestep_sampling sigma, but "
                            f"timestep_sampling is {self.timestep_sampling}: set timestep_sampling to sigma or "
                            "weighting_scheme to uniform", "weighting_scheme", "timestep_sampling",
                            zh=f"weighting_scheme {self.weighting_scheme} 只对 timestep_sampling sigma 起作用，但 "
                            f"timestep_sampling 是 {self.timestep_sampling}：请把 timestep_sampling 设为 sigma，"
                            "或把 weighting_scheme 设为 uniform")
        if self.weighting_scheme in ("sigma_sqrt", "cosmap") and self.model_prediction_type != "sigma_scaled":
            raise RuleError(f"weighting_scheme {self.weighting_scheme} weighs the loss only with "
                            f"model_prediction_type sigma_scaled, but it is {self.model_prediction_type}: "
                            "set model_prediction_type to sigma_scaled or weighting_scheme to uniform",
                            "weighting_scheme", "model_prediction_type",
                            zh=f"weighting_scheme {self.weighting_scheme} 只在 model_prediction_type 为 sigma_scaled "
                            f"时加权 loss，但现在是 {self.model_prediction_type}：请把 model_prediction_type 设为 "
                            "sigma_scaled，或把 weighting_scheme 设为 uniform")
        # A text-encoder cache needs network_train_unet_only (schema/text.py), so this also rules out caching.
        if self.train_t5xxl and getattr(self, "network_train_unet_only", False):
            raise RuleError("train_t5xxl trains a text-encoder LoRA, but network_train_unet_only is on: "
                            "turn one of them off", "train_t5xxl", "network_train_unet_only",
                            zh="train_t5xxl 会训练文本编码器的 LoRA，但 network_train_unet_only 开着：请关掉其中一个")
        return self

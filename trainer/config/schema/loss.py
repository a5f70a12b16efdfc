"""Model effect tab, noise and loss groups: how the training noise is made and how the error is weighed."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field

# The single source of the choices; trainer/loss.py implements each of them.
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
# sd-scripts' DDPM schedule for SD 1.x/2.x; min_timestep/max_timestep are checked against it.
NUM_TRAIN_TIMESTEPS = 1000


class LossFields(SchemaPart):
    noise_offset: float | None = field(
        None, "effect", "noise",
        "Noise offset: adds a random brightness/colour shift per image and channel to the training noise, so "
        "the model learns to make whole images darker or brighter. Gives deeper blacks and brighter whites "
        "(night scenes, dark backgrounds, high contrast). 0.05-0.1 is typical; much more washes colours out "
        "and shifts the brightness of everything the LoRA touches. Empty or 0 = off.",
        "噪声偏移：给训练噪声的每张图每个通道加一个随机的整体亮度/色彩偏移，让模型学会整体调暗或调亮画面。"
        "暗部更黑、亮部更亮，能画出夜景、黑背景和高对比度的图。常用 0.05-0.1；过大会让颜色发灰、"
        "LoRA 会改变所有画面的明暗。留空或 0 表示关闭。", ge=0, le=1)
    noise_offset_random_strength: bool = field(
        False, "effect", "noise",
        "Each step uses a random noise offset between 0 and noise_offset instead of always the full value: "
        "a gentler, less biased brightness effect. Needs noise_offset.",
        "每一步使用 0 到 noise_offset 之间的随机强度，而不是总用满值：明暗效果更温和、更不容易偏色。"
        "需要同时设置 noise_offset。", advanced=True)
    adaptive_noise_scale: float | None = field(
        None, "effect", "noise",
        "Adds the absolute mean of each latent channel x this value to noise_offset, so images that are already very "
        "dark, bright or colourful get a stronger offset. Small values (e.g. 0.005-0.01). Needs noise_offset.",
        "自适应噪声偏移：把每个潜变量通道平均值的绝对值乘以此值加到 noise_offset 上，本身就很暗、很亮或"
        "颜色很重的图片偏移更强。用小值（如 0.005-0.01）。需要同时设置 noise_offset。", advanced=True)
    multires_noise_iterations: int | None = field(
        None, "effect", "noise",
        "Multi-resolution (pyramid) noise: mixes in noise at this many coarser scales, so the model also learns "
        "large blobs of colour and light, not only fine grain. More varied composition and contrast, sometimes "
        "blotchy. 6-10 is typical; empty or 0 = off. Applied after noise_offset when both are set.",
        "多分辨率（金字塔）噪声：叠加若干层更粗尺度的噪声，让模型也学习大块的颜色和光影，而不只是细颗粒。"
        "构图和明暗更丰富，有时会出现色块。常用 6-10；留空或 0 表示关闭。与 noise_offset 同时设置时在其后应用。",
        advanced=True, ge=0, le=64)
    multires_noise_discount: float = field(
        0.3, "effect", "noise",
        "How much weaker each coarser level of multires noise is (0.3 = each level 30% of the previous). "
        "Higher makes the large-scale noise stronger. Only used with multires_noise_iterations.",
        "多分辨率噪声每一层比上一层弱多少（0.3 表示每层为上一层的 30%）。越大，大尺度噪声越强。"
        "只在设置 multires_noise_iterations 时生效。", advanced=True, ge=0, le=1)
    ip_noise_gamma: float | None = field(
        None, "effect", "noise",
        "Input perturbation: the model sees slightly more noise than its target assumes (strength 0.1 is "
        "typical). A regulariser against memorising the training images; makes the LoRA a bit more flexible "
        "and less overfitted. Empty or 0 = off.",
        "输入扰动噪声：模型看到的噪声比训练目标多一点（常用 0.1）。一种正则化，减少对训练图的死记硬背，"
        "让 LoRA 更灵活、不易过拟合。留空或 0 表示关闭。", advanced=True, ge=0, le=1)
    ip_noise_gamma_random_strength: bool = field(
        False, "effect", "noise",
        "Each step uses a random input-perturbation strength between 0 and ip_noise_gamma. Needs ip_noise_gamma.",
        "每一步使用 0 到 ip_noise_gamma 之间的随机扰动强度。需要同时设置 ip_noise_gamma。", advanced=True)
    zero_terminal_snr: bool = field(
        False, "effect", "noise",
        "Rescale the noise schedule so the last timestep is pure noise (zero SNR). Lets a model generate truly "
        "black or white images; meant for v-prediction models (SD2 768-v, v-pred SDXL), with an epsilon model "
        "results are unpredictable. Also use a sampler with zero-SNR support when generating.",
        "零终端信噪比：重新缩放噪声调度，让最后一步是纯噪声。模型能生成真正全黑或全白的图；适用于 v 预测模型"
        "（SD2 768-v 等），用在普通 epsilon 模型上效果难以预料。出图时也要用支持零终端信噪比的采样设置。",
        advanced=True)
    min_timestep: int | None = field(
        None, "effect", "noise",
        "Train only timesteps from this value on (0-999; empty = 0). Raising it skips the low-noise steps that "
        "teach fine detail and texture.",
        "只训练不小于此值的时间步（0-999，留空为 0）。调高会跳过负责细节和纹理的低噪声步。",
        advanced=True, ge=0, le=NUM_TRAIN_TIMESTEPS - 1)
    max_timestep: int | None = field(
        None, "effect", "noise",
        "Train only timesteps below this value (1-1000; empty = 1000). Lowering it skips the high-noise steps "
        "that decide composition, pose and colour, so the LoRA changes mostly details and style.",
        "只训练小于此值的时间步（1-1000，留空为 1000）。调低会跳过决定构图、姿势和颜色的高噪声步，"
        "LoRA 主要改变细节和画风。", advanced=True, ge=1, le=NUM_TRAIN_TIMESTEPS)
    loss_type: Literal[LOSS_TYPES] = field(  # type: ignore[valid-type]
        "l2", "effect", "loss",
        "How the prediction error is measured. l2 (squared error) is the standard. l1 and huber/smooth_l1 "
        "punish big errors less, so odd images (watermarks, outliers) pull the LoRA around less; huber and "
        "smooth_l1 behave like l2 for small errors and like l1 for large ones (threshold: huber_c).",
        "损失函数。l2（平方误差）是标准做法。l1 和 huber/smooth_l1 对大误差惩罚较轻，数据集中的异常图片"
        "（水印、离群图）对 LoRA 的拉扯更小；huber 和 smooth_l1 对小误差像 l2、对大误差像 l1（分界由 huber_c 决定）。",
        advanced=True)
    huber_schedule: Literal[HUBER_SCHEDULES] = field(  # type: ignore[valid-type]
        "snr", "effect", "loss",
        "How the huber/smooth_l1 threshold changes with the timestep: constant = huber_c x huber_scale; "
        "exponential = from huber_scale at no noise down to huber_c x huber_scale at full noise; snr = near 1 "
        "at low noise, falling to huber_c at high noise. Only for loss_type huber or smooth_l1.",
        "huber/smooth_l1 的分界随时间步的变化方式：constant 固定为 huber_c×huber_scale；exponential 从无噪声时的 "
        "huber_scale 指数下降到满噪声时的 huber_c×huber_scale；snr 在低噪声时接近 1，高噪声时降到 huber_c。"
        "只在 loss_type 为 huber 或 smooth_l1 时生效。", advanced=True)
    huber_c: float = field(
        0.1, "effect", "loss",
        "Huber threshold: errors smaller than about this count like l2, larger ones like l1. 0.1 is the usual "
        "value. Only for loss_type huber or smooth_l1.",
        "Huber 分界：比它小的误差按 l2 计算，更大的按 l1 计算。常用 0.1。只在 loss_type 为 huber 或 smooth_l1 "
        "时生效。", advanced=True, gt=0)
    huber_scale: float = field(
        1.0, "effect", "loss",
        "Multiplies the huber threshold of the constant and exponential schedules (not snr). Only for loss_type "
        "huber or smooth_l1.",
        "constant 和 exponential 调度下 Huber 分界的倍数（snr 调度不用）。只在 loss_type 为 huber 或 smooth_l1 "
        "时生效。", advanced=True, gt=0)
    min_snr_gamma: float | None = field(
        None, "effect", "loss",
        "Min-SNR weighting: lowers the weight of the low-noise timesteps, whose large loss otherwise dominates "
        "and jerks training around. Steadier, faster convergence; 5 is the paper's value, 3-5 is common, lower "
        "is stronger. Empty or 0 = off.",
        "最小信噪比加权：降低低噪声时间步的权重，否则它们的大损失会主导训练、让训练忽上忽下。收敛更稳更快；"
        "论文推荐 5，常用 3-5，越小效果越强。留空或 0 表示关闭。", ge=0)
    debiased_estimation_loss: bool = field(
        False, "effect", "loss",
        "Debiased estimation: weights each timestep by 1/sqrt(SNR) (1/(SNR+1) for v-prediction), giving the "
        "noisy steps that shape composition and colour more say. Fewer over-saturated, fried-looking results.",
        "去偏估计：按 1/sqrt(SNR)（v 预测为 1/(SNR+1)）给每个时间步加权，让决定构图和颜色的高噪声步占更大比重。"
        "减少过饱和、发焦的结果。", advanced=True, metadata="ss_debiased_estimation")
    scale_v_pred_loss_like_noise_pred: bool = field(
        False, "effect", "loss",
        "For v-prediction models only: scale the loss by SNR/(SNR+1) so timesteps weigh as they would when "
        "predicting noise; often gives more detail. An error with an epsilon (noise-predicting) model.",
        "仅用于 v 预测模型：把损失乘以 SNR/(SNR+1)，使各时间步的权重与预测噪声时一致，细节往往更多。"
        "用于普通 epsilon（预测噪声）模型会报错。", advanced=True)
    v_pred_like_loss: float | None = field(
        None, "effect", "loss",
        "For epsilon (noise-predicting) models only: adds this fraction of a v-prediction-like loss, which "
        "weighs the noisy steps more (better colour and composition). Start small, e.g. 0.1; empty or 0 = off. "
        "An error with a v-prediction model.",
        "仅用于 epsilon（预测噪声）模型：额外加上这一比例的类 v 预测损失，加大高噪声步的权重（颜色和构图更好）。"
        "从小值开始，如 0.1；留空或 0 表示关闭。用于 v 预测模型会报错。", advanced=True, ge=0)

    @model_validator(mode="after")
    def _noise_rules(self):
        if self.adaptive_noise_scale and not self.noise_offset:
            raise RuleError("adaptive_noise_scale needs noise_offset: set noise_offset (e.g. 0.05) or remove "
                            "adaptive_noise_scale", "adaptive_noise_scale", "noise_offset",
                            zh="adaptive_noise_scale 需要 noise_offset：请设置 noise_offset（例如 0.05），"
                            "或去掉 adaptive_noise_scale")
        if self.noise_offset_random_strength and not self.noise_offset:
            raise RuleError("noise_offset_random_strength needs noise_offset: set noise_offset (e.g. 0.05) or "
                            "turn noise_offset_random_strength off", "noise_offset_random_strength", "noise_offset",
                            zh="noise_offset_random_strength 需要 noise_offset：请设置 noise_offset（例如 0.05），"
                            "或关掉 noise_offset_random_strength")
        if self.ip_noise_gamma_random_strength and not self.ip_noise_gamma:
            raise RuleError("ip_noise_gamma_random_strength needs ip_noise_gamma: set ip_noise_gamma (e.g. 0.1) "
                            "or turn ip_noise_gamma_random_strength off", "ip_noise_gamma_random_strength",
                            "ip_noise_gamma", zh="ip_noise_gamma_random_strength 需要 ip_noise_gamma：请设置 "
                            "ip_noise_gamma（例如 0.1），或关掉 ip_noise_gamma_random_strength")
        low, high = self.timestep_range
        if low >= high:
            raise RuleError(f"min_timestep ({low}) must be smaller than max_timestep ({high})", "min_timestep",
                            "max_timestep", zh=f"min_timestep（{low}）必须小于 max_timestep（{high}）")
        return self

    @model_validator(mode="after")
    def _prediction_rules(self):
        # v_parameterization lives in the paths part; empty means "read the model", checked again after loading.
        v_pred = getattr(self, "v_parameterization", None)
        if self.scale_v_pred_loss_like_noise_pred and v_pred is False:
            raise RuleError("scale_v_pred_loss_like_noise_pred works only with v-prediction models, but "
                            "v_parameterization is false: turn one of them off", "scale_v_pred_loss_like_noise_pred",
                            "v_parameterization",
                            zh="scale_v_pred_loss_like_noise_pred 只对 v-prediction 模型有效，但 v_parameterization "
                            "是 false：请关掉其中一个")
        if self.v_pred_like_loss and v_pred:
            raise RuleError("v_pred_like_loss is for epsilon models, but v_parameterization is true: remove "
                            "v_pred_like_loss", "v_pred_like_loss", "v_parameterization",
                            zh="v_pred_like_loss 用于 epsilon 模型，但 v_parameterization 是 true："
                            "请去掉 v_pred_like_loss")
        return self

    @property
    def timestep_range(self) -> tuple[int, int]:
        """[low, high) of the sampled training timesteps, sd-scripts' defaults filled in."""
        low = 0 if self.min_timestep is None else self.min_timestep
        high = NUM_TRAIN_TIMESTEPS if self.max_timestep is None else self.max_timestep
        return low, high

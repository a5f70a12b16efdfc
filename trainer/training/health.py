"""The 炸炉 detector: non-finite steps, a diverging or collapsing loss, and broken preview images.

Pure and torch-free: the loop feeds HealthMonitor each optimizer step's loss and gradient norm, and each preview
image to PreviewJudge (score_image gives just the code). What comes back are HealthEvents, which the loop writes
with RunLog.health; a non-finite step under on_nan: stop is raised as Diverged, which ends the run as failed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.checks.advice import config_advice
from trainer.checks.lr_curve import group_lrs
from trainer.config import TrainConfig
from trainer.families.table import FAMILIES

# Loss curve: an exponential moving average over about EMA_WINDOW steps smooths the per-step noise of diffusion
# losses (each step draws its own timesteps); nothing is judged before the first window is full.
EMA_WINDOW = 50
DIVERGENCE_RATIO = 2.0  # the smoothed loss at twice its lowest value, and still rising: diverging
COLLAPSE_LOSS = 1e-4  # a diffusion loss never gets this close to 0 unless the prediction is degenerate
ZERO_GRAD_STEPS = 20  # this many steps in a row with a gradient norm of exactly 0: nothing is learning

# Preview images, values in [0, 1].
FLAT_STD = 0.01  # spread (std) of every channel below this: one flat colour (1% of the range)
DARK_MEAN, BRIGHT_MEAN = 0.1, 0.9  # a flat image below / above these is all black / all white
# Neighbour correlation: how well a pixel predicts the next one (1 = smooth, 0 = unrelated). It is measured at
# 1, 2, 4 and 8 pixels (8: one latent pixel, where noise decoded by a VAE is still independent) while the image
# keeps at least NOISE_MIN_GRID pixels a side. Photos, drawings and gradients stayed above 0.55 at every scale
# (64 to 1024 px); uniform noise near 0, latent noise upscaled 8x (blocks, bilinear, bicubic) and the tiny random
# test model's 256-512 px previews at 0.0-0.35. Its 64 px previews (0.7) are too small to tell from a thumbnail.
NOISE_SCALES = (1, 2, 4, 8)
NOISE_MIN_GRID = 32
NOISE_CORRELATION = 0.45


@dataclass(frozen=True)
class HealthEvent:
    level: str  # info, warning or error
    code: str  # nan_loss, loss_divergence, loss_collapse, black_sample, noise_sample, base_sample
    message: str
    hint: str  # one actionable line
    step: int
    details: dict = field(default_factory=dict)  # extra event fields: loss, grad_norm, path, ...
    message_zh: str = ""  # the message and hint in Chinese, for the GUI's Chinese page (empty: not translated)
    hint_zh: str = ""

    def fields(self) -> dict:
        zh = {key: value for key, value in (("message_zh", self.message_zh), ("hint_zh", self.hint_zh)) if value}
        return {"level": self.level, "code": self.code, "message": self.message, "hint": self.hint,
                "step": self.step, **zh, **self.details}


class Diverged(Exception):
    """A non-finite step under on_nan: stop. The run ends as failed and writes no further file."""

    def __init__(self, event: HealthEvent):
        super().__init__(event.message)
        self.event = event


class HealthMonitor:
    """Fed once per optimizer step; each condition warns once and again only after it has cleared."""

    def __init__(self, config: TrainConfig):
        self.config = config  # resolved (model_family known), for the diagnosis
        self.ema: float | None = None
        self.steps = 0
        self.lowest = math.inf  # the lowest smoothed loss since the first full window
        self.window: deque[float] = deque(maxlen=EMA_WINDOW)  # the smoothed loss of the last steps
        self.zero_grad_steps = 0
        self.skipped = 0  # non-finite steps skipped under on_nan: warn
        self.active: set[str] = set()  # conditions warned about that still hold

    def observe(self, step: int, loss: float, grad_norm: float | None) -> list[HealthEvent]:
        """A finite step's loss and gradient norm (None when unknown); returns the warnings it raises."""
        self.ema = loss if self.ema is None else self.ema + 2 / (EMA_WINDOW + 1) * (loss - self.ema)
        self.steps += 1
        self.window.append(self.ema)
        self.zero_grad_steps = self.zero_grad_steps + 1 if grad_norm == 0 else 0
        warm = self.steps >= EMA_WINDOW
        if warm:
            self.lowest = min(self.lowest, self.ema)
        diverging = warm and self.ema > DIVERGENCE_RATIO * self.lowest and self.ema > self.window[0]
        collapsed = (warm and self.ema < COLLAPSE_LOSS) or self.zero_grad_steps >= ZERO_GRAD_STEPS
        events = [self._once("loss_divergence", diverging, lambda: self._divergence(step)),
                  self._once("loss_collapse", collapsed, lambda: self._collapse(step))]
        return [event for event in events if event is not None]

    def non_finite(self, step: int, loss: float, grad_norm: float, lr: float | None) -> HealthEvent | None:
        """The nan_loss event of a step whose loss or gradients are not finite: an error under on_nan: stop;
        under warn a warning for the 1st, 10th, 100th... skipped step, so a run that keeps failing stays readable."""
        stop = self.config.on_nan == "stop"
        self.skipped += 1
        if not stop and not _power_of_ten(self.skipped):
            return None
        what = f"the loss is {loss:g}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm:g}"
        at = f" (learning rate {lr:.3g})" if lr is not None else ""
        causes, hint = diagnose_nan(self.config)
        outcome = ("the run stops; the files saved so far are intact" if stop else
                   f"the update was skipped ({self.skipped} step{'s' if self.skipped > 1 else ''} skipped so far)")
        what_zh = f"loss 为 {loss:g}" if not math.isfinite(loss) else f"梯度范数为 {grad_norm:g}"
        at_zh = f"（学习率 {lr:.3g}）" if lr is not None else ""
        outcome_zh = "训练停止；之前保存的文件完好" if stop else f"这一步的更新已跳过（到目前共跳过 {self.skipped} 步）"
        causes_zh, hint_zh = diagnose_nan(self.config, "zh")
        return HealthEvent("error" if stop else "warning", "nan_loss",
                           f"{what} at step {step}{at}: {outcome}. Likely causes: " + " | ".join(causes), hint, step,
                           {"loss": _finite_or_none(loss), "grad_norm": _finite_or_none(grad_norm)},
                           message_zh=f"炸炉了：第 {step} 步{at_zh}{what_zh}：{outcome_zh}"
                           "。可能的原因：" + " | ".join(causes_zh),
                           hint_zh=hint_zh)

    def _once(self, code: str, holds: bool, make) -> HealthEvent | None:
        if not holds:
            self.active.discard(code)
            return None
        if code in self.active:
            return None
        self.active.add(code)
        return make()

    def _divergence(self, step: int) -> HealthEvent:
        return HealthEvent(
            "warning", "loss_divergence",
            f"the smoothed loss has risen to {self.ema:.4g}, over {DIVERGENCE_RATIO:g}x its lowest {self.lowest:.4g}, "
            f"and is still rising at step {step}: the training is diverging",
            "lower the learning rate (a half to a tenth) and keep max_grad_norm at 1.0; the earlier epoch files are "
            "likely the better ones", step, {"loss_ema": self.ema},
            message_zh=f"平滑后的 loss 已升到 {self.ema:.4g}，超过最低值 {self.lowest:.4g} 的 {DIVERGENCE_RATIO:g} 倍，"
            f"到第 {step} 步仍在上升：训练正在发散",
            hint_zh="把学习率降到一半到十分之一，max_grad_norm 保持 1.0；之前几轮保存的文件可能更好")

    def _collapse(self, step: int) -> HealthEvent:
        if self.zero_grad_steps >= ZERO_GRAD_STEPS:
            return HealthEvent(
                "warning", "loss_collapse",
                f"the gradients have been exactly zero for {self.zero_grad_steps} steps up to step {step}: the "
                "LoRA is not learning anything",
                "check that the LoRA takes part: module_dropout/network_dropout below 1, a learning rate above 0 and "
                "the parts you train (network_train_unet_only / network_train_text_encoder_only)", step,
                message_zh=f"到第 {step} 步为止，梯度已连续 {self.zero_grad_steps} 步恰好为 0：LoRA 什么也没学到",
                hint_zh="请确认 LoRA 参与了训练：module_dropout/network_dropout 小于 1、学习率大于 0，以及训练的部分"
                "（network_train_unet_only / network_train_text_encoder_only）")
        return HealthEvent(
            "warning", "loss_collapse",
            f"the smoothed loss has fallen to {self.ema:.3g} at step {step}: a diffusion model cannot predict the "
            "noise this well, so the prediction has collapsed",
            "check the previews; lower the learning rate and check the loss settings (loss_type, min_snr_gamma, "
            "v_parameterization for v-prediction models)", step, {"loss_ema": self.ema},
            message_zh=f"第 {step} 步时平滑后的 loss 降到了 {self.ema:.3g}：扩散模型不可能把噪声预测得这么准，"
            "说明预测已经塌缩",
            hint_zh="请看预览图；降低学习率"
            "，并检查 loss 设置（loss_type、min_snr_gamma，v 预测模型的 v_parameterization）")


def corrupt_weights_event(config: TrainConfig, step: int, file_name: str) -> HealthEvent:
    """The LoRA weights themselves turned NaN/inf (after a step whose loss and gradients were still finite):
    the file about to be written is not, and the run stops whatever on_nan says, as it cannot recover."""
    causes, hint = diagnose_nan(config)
    causes_zh, hint_zh = diagnose_nan(config, "zh")
    return HealthEvent("error", "nan_loss",
                       f"the LoRA weights hold NaN/inf after step {step}: {file_name} was not written and the run "
                       "stops; the files saved before are intact. Likely causes: " + " | ".join(causes), hint, step,
                       message_zh=f"炸炉了：第 {step} 步之后 LoRA 权重里出现了 NaN/inf："
                       f"{file_name} 没有写出，训练停止；"
                       "之前保存的文件完好。可能的原因：" + " | ".join(causes_zh), hint_zh=hint_zh)


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or Infinity (browsers reject them), so events carry null and the message the value."""
    return value if value is not None and math.isfinite(value) else None


# --- diagnosis of a non-finite step -------------------------------------------------------------------------
# Advice (trainer/advice.py) that explains a NaN, most certain first, with the one thing to do about it.
_NAN_ADVICE = {  # code: (fix, its Chinese)
    "fp16_with_flux": ("set mixed_precision: bf16 (RTX 30xx and newer)", "设 mixed_precision: bf16（RTX 30 系及更新）"),
    "high_lr": ("lower {key} to about a tenth (AdamW around 1e-4, Lion around 3e-5) and keep max_grad_norm at 1.0",
                "把 {key} 降到约十分之一（AdamW 约 1e-4，Lion 约 3e-5），max_grad_norm 保持 1.0"),
    "adaptive_lr_not_1": ("set {key} to 1.0: D-Adaptation and Prodigy find the step size themselves",
                          "把 {key} 设为 1.0：D-Adaptation 和 Prodigy 会自己找步长"),
    "alpha_above_dim": ("set network_alpha to network_dim or lower (half is common)",
                        "把 network_alpha 设为不超过 network_dim（常用一半）"),
    "conv_alpha_above_conv_dim": ("set conv_alpha to conv_dim or lower", "把 conv_alpha 设为不超过 conv_dim"),
}
_FALLBACK = (("no setting stands out: the learning rate may still be too high for this dataset, or an image is "
              "broken"), "lower the learning rate to a half or a tenth, and check the dataset for broken images",
             "没有明显有问题的设置：学习率对这个数据集可能仍然太高，或者有图片损坏",
             "把学习率降到一半到十分之一，并检查数据集里有没有损坏的图片")


def diagnose_nan(config: TrainConfig, lang: str = "en") -> tuple[list[str], str]:
    """The likely causes of a non-finite loss or gradient for this config, most likely first, and the one
    actionable hint for the first of them, in lang (en or zh)."""
    advices = {advice.code: advice for advice in config_advice(config)}
    found = [(advices[code].en, fix.format(key=advices[code].keys[0]), advices[code].zh,
              fix_zh.format(key=advices[code].keys[0]))
             for code, (fix, fix_zh) in _NAN_ADVICE.items() if code in advices and not _low_adaptive_lr(config, code)]
    found += _precision_causes(config)
    if config.max_grad_norm == 0:
        found.append(("gradient clipping is off (max_grad_norm 0), so one bad batch can throw the weights far off",
                      "set max_grad_norm: 1.0", "梯度裁剪关着（max_grad_norm 为 0），一批坏数据就能把权重甩飞",
                      "设 max_grad_norm: 1.0"))
    found = found or [_FALLBACK]
    at = 2 if lang == "zh" else 0
    return [cause[at] for cause in found], found[0][at + 1]


def _low_adaptive_lr(config: TrainConfig, code: str) -> bool:
    """An adaptive optimizer's rate below 1 only slows it down; only above 1 can it explode."""
    return code == "adaptive_lr_not_1" and next(iter(group_lrs(config).values()), 1.0) < 1


def _precision_causes(config: TrainConfig) -> list[tuple[str, str, str, str]]:
    causes = []
    family = FAMILIES.get(config.model_family)
    if config.mixed_precision == "fp16" and not (family and family.fp16_overflows):  # its own advice says it
        causes.append((("mixed_precision fp16 overflows easily: activations above 65504 become inf, then NaN "
                        "(the SDXL VAE is known for it)"),
                       ("set mixed_precision: bf16 (RTX 30xx and newer); on older cards give an fp16-safe VAE "
                        "(vae, e.g. sdxl-vae-fp16-fix) and a lower learning rate"),
                       "mixed_precision fp16 很容易溢出：超过 65504 的激活值会变成 inf，再变成 NaN"
                       "（SDXL 的 VAE 尤其如此）",
                       "设 mixed_precision: bf16（RTX 30 系及更新）；老显卡请用 fp16 安全的 VAE（vae，例如 "
                       "sdxl-vae-fp16-fix）并降低学习率"))
    if config.full_fp16:
        causes.append((("full_fp16 keeps the LoRA weights themselves in fp16, where small updates round away and "
                        "large ones overflow"), "turn off full_fp16",
                       "full_fp16 把 LoRA 权重本身也存成 fp16，小的更新会被舍掉，大的会溢出", "关掉 full_fp16"))
    return causes


# --- preview images -----------------------------------------------------------------------------------------
_IMAGE_CODES = {"nan": "black_sample", "black": "black_sample", "white": "black_sample", "flat": "black_sample",
                "noise": "noise_sample"}


def classify_image(image: np.ndarray) -> str | None:
    """'nan', 'black', 'white', 'flat' or 'noise' for a broken preview (HxWxC uint8, or float in [0, 1]),
    None for one that looks like a picture."""
    pixels = np.asarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():
        return "nan"
    if np.asarray(image).dtype == np.uint8:
        pixels = pixels / 255
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    # Per channel: a red shape on a green ground of the same brightness is flat in luminance, not in colour.
    spreads = pixels.std(axis=(0, 1))
    if spreads.max() < FLAT_STD:
        mean = float(pixels.mean())
        return "black" if mean < DARK_MEAN else "white" if mean > BRIGHT_MEAN else "flat"
    strongest = pixels[..., int(spreads.argmax())]  # the channel that carries the most of the picture
    return "noise" if smoothness(strongest) < NOISE_CORRELATION else None


def smoothness(plane: np.ndarray) -> float:
    """The lowest neighbour correlation over NOISE_SCALES, each scale averaging blocks of that many pixels."""
    height, width = plane.shape
    values = []
    for scale in NOISE_SCALES:
        if scale > 1 and min(height, width) // scale < NOISE_MIN_GRID:
            break
        h, w = height // scale * scale, width // scale * scale
        pooled = plane[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3))
        if pooled.std() > 0:
            values.append(neighbour_correlation(pooled))
    return min(values, default=1.0)


def neighbour_correlation(plane: np.ndarray) -> float:
    """The correlation of each pixel with its right and its lower neighbour, averaged (plane: HxW, not flat)."""
    z = (plane - plane.mean()) / plane.std()
    across = float(np.mean(z[:, 1:] * z[:, :-1])) if z.shape[1] > 1 else 1.0
    down = float(np.mean(z[1:, :] * z[:-1, :])) if z.shape[0] > 1 else 1.0
    return (across + down) / 2


def score_image(image: np.ndarray) -> str | None:
    """black_sample (all black, all white, flat or NaN), noise_sample, or None for a normal preview."""
    kind = classify_image(image)
    return _IMAGE_CODES[kind] if kind else None


class PreviewJudge:
    """Judges each preview against the same prompt's first one: the preview before training (sample_at_first) or,
    without it, the first preview of the run. A broken preview is blamed on the LoRA only when that baseline
    looked like a picture; when the baseline is broken too, the base model makes it (a broken model file, or the
    demo's random model), and lowering the learning rate would not help."""

    def __init__(self) -> None:
        self.baselines: dict[int, tuple[int, str | None]] = {}  # prompt index -> (its first step, its verdict)

    def judge(self, index: int, image: np.ndarray, step: int, path: str) -> HealthEvent | None:
        """The health warning of prompt `index`'s preview at `step`, or None for a normal one."""
        kind = classify_image(image)
        first_step, first_kind = self.baselines.setdefault(index, (step, kind))
        if kind is None:
            return None
        name = Path(path).name
        if first_step == step or first_kind is not None:
            return _base_model_event(kind, name, step, path, before=first_step == 0, first=first_step == step)
        return _lora_event(kind, name, step, path, first_step)


_WHAT = {"nan": ("NaN (not a number)", "NaN（无效数值）"), "black": ("all black", "全黑"),
         "white": ("all white", "全白"), "flat": ("one flat colour", "一片纯色"), "noise": ("pure noise", "满屏噪点")}


def _base_model_event(kind: str, name: str, step: int, path: str, before: bool, first: bool) -> HealthEvent:
    """The base model's own output is broken: the first preview of its prompt, or one whose first was broken too."""
    what, what_zh = _WHAT[kind]
    if first and before:
        when = "before any training, so the base model itself gives this"
        when_zh = "这是训练开始前生成的，底模本身就是这样"
    elif first:
        when, when_zh = ("at this prompt's first preview; with no preview from before training (sample_at_first) it "
                         "cannot be told apart from the LoRA, but it usually is the base model",
                         "这是该提示词的第一张预览；没有训练前的预览（sample_at_first）可供对照，无法排除 LoRA 的原因，"
                         "但通常是底模本身的问题")
    else:
        when, when_zh = ("as was this prompt's first preview, so the base model gives this, not the LoRA",
                         "该提示词的第一张预览就已如此，所以问题出在底模，而不是 LoRA")
    return HealthEvent(
        "warning", "base_sample", f"preview {name} is {what}, {when}",
        "the base model may be broken (check the model file, its VAE, v_parameterization for v-prediction models, "
        "the prompt's sampling steps --s) or be a random test model such as the demo's; lowering the learning "
        "rate will not help", step, {"path": path},
        message_zh=f"预览图 {name} {what_zh}，{when_zh}",
        hint_zh="底模可能有问题（检查模型文件、VAE、v 预测模型的 v_parameterization、提示词的采样步数 --s），"
                "或者它是演示用的随机模型；降低学习率没有用")


def _lora_event(kind: str, name: str, step: int, path: str, first_step: int) -> HealthEvent:
    """A broken preview whose prompt gave a picture at step `first_step`: the training broke it."""
    what, what_zh = _WHAT[kind]
    message = f"preview {name} is {what}, while this prompt's preview at step {first_step} was a picture"
    message_zh = f"预览图 {name} {what_zh}，而同一提示词在第 {first_step} 步的预览还是正常图片"
    if kind in ("nan", "black"):
        hint = "usually NaN inside the model: set mixed_precision: bf16 or an fp16-safe VAE; lower the learning rate"
        hint_zh = "通常是模型内部出现了 NaN：把 mixed_precision 设为 bf16 或换用 fp16 安全的 VAE，并降低学习率"
    elif kind == "noise":
        hint = "the LoRA has blown up: lower the learning rate, and compare with the previews of earlier epochs"
        hint_zh = "LoRA 练炸了：降低学习率，并与前几轮的预览图对比"
    else:
        hint = "the LoRA has overpowered the model: lower the learning rate, or use an earlier epoch's file"
        hint_zh = "LoRA 压过了底模：降低学习率，或改用更早一轮的文件"
    return HealthEvent("warning", _IMAGE_CODES[kind], message, hint, step, {"path": path},
                       message_zh=message_zh, hint_zh=hint_zh)

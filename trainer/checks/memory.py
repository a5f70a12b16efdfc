"""The peak GPU memory a config needs, estimated before any model loads and broken down so that users see what to
change: `python -m trainer check` prints it after the step plan, the GUI shows it beside the plan and warns
before Start when it exceeds the GPU. Torch-free (the GUI process imports it).

The model, part by part (docs/training.md, "What fits on your card"):
- Parameter counts come from the real architectures: trainer/families/configs/sizes.json, counted on the meta
  device from the shipped configs (tests/model_sizes.py writes it, tests/test_memory_estimate.py checks it).
- Load order (trainer/training/loop.py): latents are cached with the VAE alone on the GPU, text-encoder outputs
  with the encoders alone, and what was cached leaves the GPU before the denoiser is placed. The peak is the
  larger of that caching phase and the training steps.
- Base weights in the training precision; fp8_base keeps every Linear weight in fp8 (the frozen text encoders'
  too, unless fp8_base_unet), quantize_base in int8 or nf4; the VAE stays float32. blocks_to_swap takes the
  swapped blocks' share of the parameters (sizes.json "blocks") off _denoiser's part, less the two of them on the
  GPU at a time (the running one, the next one).
- Trained weights, their gradients and the optimizer's state (OptimizerSpec.state_bytes) per LoRA parameter.
- Activations: Family.activation_gib per megapixel of the batch (without, with gradient checkpointing, and with
  cpu_offload_checkpointing), uncalibrated until a GPU run measures them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.adapters.types import NETWORK_TYPES
from trainer.families.table import FAMILIES

if TYPE_CHECKING:
    from trainer.config import TrainConfig

SIZES_FILE = Path(__file__).resolve().parents[1] / "families" / "configs" / "sizes.json"
GIB = 2**30
CUDA_CONTEXT_GIB = 0.5  # the CUDA context and cuDNN/cuBLAS workspaces: not in torch's allocator, but on the card
COMPUTE_BYTES = {"no": 4, "fp16": 2, "bf16": 2}
PRECISION_NAMES = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
COMPACT_BYTES = {"fp8": 1.0, "int8": 1.0, "nf4": 0.5625}  # nf4: 4 bits + an fp32 absmax per 64 weights
DEFAULT_STATE_BYTES = 8.0  # an optimizer named by class path: assume Adam's two fp32 states
MIN_SIDE = 512  # the smallest resolution side the advice suggests


@dataclass(frozen=True)
class Part:
    code: str  # stable id: denoiser, text_encoders, vae, network, activations, cuda
    en: str  # what it is, in English
    zh: str  # the same in Chinese
    gib: float

    def text(self, lang: str) -> str:
        return self.zh if lang.startswith("zh") else self.en


@dataclass(frozen=True)
class Estimate:
    steps: tuple[Part, ...]  # on the GPU during the training steps
    caching_gib: float  # the phase before them, the caching components alone on the GPU; 0 when nothing is cached

    @property
    def steps_gib(self) -> float:
        return sum(part.gib for part in self.steps)

    @property
    def peak_gib(self) -> float:
        return max(self.steps_gib, self.caching_gib)

    def part(self, code: str) -> Part:
        return next(part for part in self.steps if part.code == code)

    def fits(self, vram_gib: float) -> bool:
        return self.peak_gib <= vram_gib

    def describe(self, lang: str = "en") -> str:
        """The total and one line per part, aligned, as `check` prints it and the GUI shows it."""
        zh = lang.startswith("zh")
        caching = (f"; caching before them {self.caching_gib:.1f} GiB" if not zh else
                   f"；之前的缓存阶段 {self.caching_gib:.1f} GiB") if self.caching_gib else ""
        head = (f"估计显存峰值：{self.peak_gib:.1f} GiB（训练步骤 {self.steps_gib:.1f} GiB{caching}）" if zh else
                f"estimated peak GPU memory: {self.peak_gib:.1f} GiB (training steps {self.steps_gib:.1f} GiB"
                f"{caching})")
        return "\n".join([head] + [f"  {part.gib:5.1f} GiB  {part.text(lang)}" for part in self.steps])


@dataclass(frozen=True)
class Remedy:
    changes: dict[str, Any]  # config keys and the values that would lower the estimate
    estimate: Estimate

    def text(self) -> str:
        settings = ", ".join(f"{key}: {_yaml(value)}" for key, value in self.changes.items())
        return f"{settings} → {self.estimate.peak_gib:.1f} GiB"


@cache
def model_sizes(family: str) -> dict[str, Any]:
    """The components' sizes of the family's standard model (sizes.json; see tests/model_sizes.py)."""
    sizes = json.loads(SIZES_FILE.read_text(encoding="utf-8"))
    return sizes[family]


def estimate(config: TrainConfig, family: str | None = None) -> Estimate | None:
    """The estimate for the config; None when the model family is not known yet (auto, not detected)."""
    name = family or config.model_family
    if name not in FAMILIES:
        return None
    sizes, spec = model_sizes(name), FAMILIES[name]
    steps = (_denoiser(config, name, sizes[spec.denoiser]), _text_encoders(config, name, sizes),
             _vae(config, sizes["vae"]), _network(config, name), _activations(config, name),
             Part("cuda", "CUDA context", "CUDA 上下文", CUDA_CONTEXT_GIB))
    return Estimate(steps, _caching_gib(config, name, sizes))


def remedies(config: TrainConfig, family: str | None = None, vram_gib: float | None = None) -> list[Remedy]:
    """The single changes that lower the estimate, lowest first, then as many of them together as the schema's
    rules allow (fp8_base or quantize_base, say, not both). vram_gib: blocks_to_swap as few blocks as fit it."""
    current = estimate(config, family)
    if current is None:
        return []
    name = family or config.model_family
    found = []
    for changes in _candidates(config, name, vram_gib):
        changed = estimate(config.model_copy(update=changes), family)
        if changed.peak_gib < current.peak_gib - 0.05 and _allowed(config, changes):
            found.append(Remedy(changes, changed))
    found.sort(key=lambda remedy: remedy.estimate.peak_gib)
    together: dict[str, Any] = {}
    combined = 0
    for remedy in found:  # lowest first
        if _allowed(config, {**together, **remedy.changes}):
            together.update(remedy.changes)
            combined += 1
    if combined > 1:
        found.append(Remedy(together, estimate(config.model_copy(update=together), family)))
    return found


def _allowed(config: TrainConfig, changes: dict[str, Any]) -> bool:
    """Whether the config with these changes passes the schema's rules."""
    try:
        type(config).model_validate({**config.model_dump(), **changes})
    except ValueError:
        return False
    return True


def fit_report(config: TrainConfig, vram_gib: float | None, family: str | None = None, lang: str = "en") -> str:
    """The estimate compared with a card of vram_gib (None: no GPU known), and what would make it fit when it
    does not."""
    zh = lang.startswith("zh")
    result = estimate(config, family)
    if result is None:
        return "估计显存：底模类型未知，无法估计" if zh else "memory estimate: the model family is not known yet"
    lines = [result.describe(lang)]
    if vram_gib is None:
        lines.append("未检测到显卡，无从比较（python -m trainer check --vram GB 可与指定显存比较）" if zh else
                     "no GPU found to compare with (python -m trainer check --vram GB compares with a card)")
    elif result.fits(vram_gib):
        lines.append(f"可以放进 {vram_gib:g} GB 显存" if zh else f"fits in {vram_gib:g} GB of GPU memory")
    else:
        lines.append(f"超出 {vram_gib:g} GB 显存；以下改动可降低估计（✓ 即可放下）：" if zh else
                     f"does not fit in {vram_gib:g} GB of GPU memory; these changes lower the estimate "
                     "(✓: then it fits):")
        fixes = remedies(config, family, vram_gib)
        lines += [f"  {'✓' if fix.estimate.fits(vram_gib) else '✗'} {fix.text()}" for fix in fixes] or [
            "  没有能进一步降低估计的单项设置" if zh else "  no single setting here lowers it further"]
    return "\n".join(lines)


# --- the parts -----------------------------------------------------------------------------------------------
def _denoiser(config: TrainConfig, family: str, sizes: dict[str, int]) -> Part:
    params, linear = sizes["params"], sizes["linear_weights"]
    compute, precision = COMPUTE_BYTES[config.mixed_precision], PRECISION_NAMES[config.mixed_precision]
    compact = "fp8" if config.fp8_denoiser else None if config.quantize_base == "none" else config.quantize_base
    label = FAMILIES[family].denoiser.replace("unet", "UNet")
    if compact is None:
        stored, how = params * compute, precision
    else:
        stored, how = linear * COMPACT_BYTES[compact] + (params - linear) * compute, f"{compact} + {precision}"
    swapped = _swapped_parameters(config, family, sizes)
    swap_en = f", {_count(swapped)} of them waiting on the CPU (blocks_to_swap)" if swapped else ""
    swap_zh = f"，其中 {_count(swapped)} 在内存中等待轮换（blocks_to_swap）" if swapped else ""
    return Part("denoiser", f"base {label}: {_count(params)} parameters in {how}{swap_en}",
                f"底模 {label}：{_count(params)} 参数，{how}{swap_zh}", stored * (1 - swapped / params) / GIB)


def _swapped_parameters(config: TrainConfig, family: str, sizes: dict[str, Any]) -> int:
    """The parameters blocks_to_swap keeps off the GPU: its blocks (Family.swap_split of the block lists) but the
    two largest, which are on it at a time."""
    spec, lists = FAMILIES[family], sizes.get("blocks", {})
    split = spec.swap_split(config.blocks_to_swap or 0)
    blocks = [lists[name]["params"] // lists[name]["count"] for name, count in zip(spec.swappable_blocks, split)
              for _ in range(min(count, lists[name]["count"]))]
    return sum(sorted(blocks)[:-2])


def _text_encoders(config: TrainConfig, family: str, sizes: dict[str, Any]) -> Part:
    names = "+".join(encoder.model for encoder in FAMILIES[family].text_encoders)
    if config.text_encoder_outputs_cached:
        return Part("text_encoders", f"text encoders ({names}): outputs cached, off the GPU",
                    f"文本编码器（{names}）：输出已缓存，不在显卡上", 0.0)
    params = sum(sizes[encoder.component]["params"] for encoder in FAMILIES[family].text_encoders)
    how = _encoders_precision(config, family)
    return Part("text_encoders", f"text encoders ({names}): {_count(params)} parameters in {how}",
                f"文本编码器（{names}）：{_count(params)} 参数，{how}", _encoders_bytes(config, family, sizes) / GIB)


def _encoders_bytes(config: TrainConfig, family: str, sizes: dict[str, Any]) -> float:
    """The text encoders' weights: fp8_base stores the frozen ones' Linear weights in fp8 (fp8_text_encoders)."""
    compute, total = COMPUTE_BYTES[config.mixed_precision], 0.0
    trained = config.trained_text_encoders(family)
    for encoder in FAMILIES[family].text_encoders:
        params, linear = sizes[encoder.component]["params"], sizes[encoder.component]["linear_weights"]
        compact = config.fp8_text_encoders and encoder.component not in trained
        total += linear * COMPACT_BYTES["fp8"] + (params - linear) * compute if compact else params * compute
    return total


def _encoders_precision(config: TrainConfig, family: str) -> str:
    precision = PRECISION_NAMES[config.mixed_precision]
    return f"fp8 + {precision}" if config.fp8_text_encoders and len(config.trained_text_encoders(family)) < len(
        FAMILIES[family].text_encoders) else precision


def _vae(config: TrainConfig, sizes: dict[str, int]) -> Part:
    if config.cache_latents:
        return Part("vae", "VAE: latents cached, off the GPU", "VAE：潜变量已缓存，不在显卡上", 0.0)
    params = sizes["params"]
    return Part("vae", f"VAE: {_count(params)} parameters in fp32", f"VAE：{_count(params)} 参数，fp32",
                params * 4 / GIB)


def trained_parameters(config: TrainConfig, family: str) -> int:
    """The LoRA's parameter count: rank x (in + out features) over the trained parts' targeted layers."""
    spec, sizes = FAMILIES[family], model_sizes(family)
    kind = NETWORK_TYPES[config.network_type]
    parts = ([spec.denoiser] if config.train_unet else []) + config.trained_text_encoders(family)
    dim, conv_dim = _rank(kind, config.network_dim), _rank(kind, config.conv_dim_value)
    total = 0
    for part in parts:
        groups = sizes[part]["lora"]
        total += dim * groups["attention"]["per_rank"]
        if kind.convs and "conv" in groups:
            total += dim * groups["resnet"]["per_rank"] + conv_dim * groups["conv"]["per_rank"]
    return total * kind.rank_pairs


def _rank(kind, dim: int) -> int:
    """The rank the estimate counts: a full-matrix LoKr's two Kronecker factors (about sqrt(out) x sqrt(in) each,
    for factors near the square root) hold about what a rank-1 pair does."""
    return 1 if kind.full_matrix_rank is not None and dim >= kind.full_matrix_rank else dim


def _network(config: TrainConfig, family: str) -> Part:
    params = trained_parameters(config, family)
    weight = 2 if config.full_fp16 or config.full_bf16 else 4
    spec = config.optimizer_spec
    state = spec.state_bytes if spec else DEFAULT_STATE_BYTES
    return Part("network", f"{NETWORK_TYPES[config.network_type].label}: {_count(params)} parameters, weights + "
                f"gradients + {config.optimizer_type} state ({2 * weight + state:g} bytes each)",
                f"{NETWORK_TYPES[config.network_type].label}：{_count(params)} 参数，权重 + 梯度 + "
                f"{config.optimizer_type} 状态（每个 {2 * weight + state:g} 字节）",
                params * (2 * weight + state) / GIB)


def _activations(config: TrainConfig, family: str) -> Part:
    width, height = config.resolution_wh
    without, checkpointed, offloaded = FAMILIES[family].activation_gib
    per_mp = (offloaded if config.cpu_offload_checkpointing else checkpointed) if config.gradient_checkpointing \
        else without
    gib = per_mp * width * height / 2**20 * config.train_batch_size * COMPUTE_BYTES[config.mixed_precision] / 2
    offload, offload_zh = (" offloaded to the CPU", "（卸载到内存）") if config.cpu_offload_checkpointing else ("", "")
    checkpointing = f", gradient checkpointing{offload}" if config.gradient_checkpointing else ""
    checkpointing_zh = f"，梯度检查点{offload_zh}" if config.gradient_checkpointing else ""
    return Part("activations", f"activations: batch {config.train_batch_size} at {width}x{height}{checkpointing} "
                "(uncalibrated)", f"激活值：批大小 {config.train_batch_size}，{width}x{height}{checkpointing_zh}"
                "（未经实测校准）", gib)


def _caching_gib(config: TrainConfig, family: str, sizes: dict[str, Any]) -> float:
    """The caching phase: the VAE alone, then the text encoders alone, each beside the CUDA context."""
    phases = [sizes["vae"]["params"] * 4] if config.cache_latents else []
    if config.text_encoder_outputs_cached:
        phases.append(_encoders_bytes(config, family, sizes))
    return max(phases) / GIB + CUDA_CONTEXT_GIB if phases else 0.0


# --- what would make it fit ----------------------------------------------------------------------------------
def _candidates(config: TrainConfig, family: str, vram_gib: float | None) -> list[dict[str, Any]]:
    """Single changes that save memory, where the config does not have them yet."""
    found: list[dict[str, Any]] = []
    for key in ("gradient_checkpointing", "cache_latents", "cache_text_encoder_outputs"):
        if not getattr(config, key):
            found.append({key: True})
    if not config.fp8_denoiser and config.quantize_base == "none":
        found += [{"fp8_base": True}, {"quantize_base": "int8"}, {"quantize_base": "nf4"}]
    if config.gradient_checkpointing and not config.cpu_offload_checkpointing:
        found.append({"cpu_offload_checkpointing": True})
    blocks = _blocks_to_swap(config, family, vram_gib) if FAMILIES[family].swappable_blocks else 0
    if blocks > (config.blocks_to_swap or 0):
        found.append({"blocks_to_swap": blocks})
    spec = config.optimizer_spec
    if (spec.state_bytes if spec else DEFAULT_STATE_BYTES) > 2:
        found.append({"optimizer_type": "AdamW8bit"})
    if config.train_batch_size > 1:
        found.append({"train_batch_size": 1})
    width, height = config.resolution_wh
    smaller = [max(MIN_SIDE, math.floor(side * 0.75 / 64) * 64) if side > MIN_SIDE else side
               for side in (width, height)]
    if smaller != [width, height]:
        found.append({"resolution": f"{smaller[0]},{smaller[1]}"})
    return found


def _blocks_to_swap(config: TrainConfig, family: str, vram_gib: float | None) -> int:
    """The fewest blocks whose swapping makes the config fit vram_gib (each one swapped costs speed); all that
    can swap when none does or no card is known."""
    lists = model_sizes(family)[FAMILIES[family].denoiser]["blocks"]
    largest = FAMILIES[family].max_blocks_to_swap(tuple(lists[name]["count"] for name in lists))
    if vram_gib is None:
        return largest
    fitting = (blocks for blocks in range(1, largest)
               if estimate(config.model_copy(update={"blocks_to_swap": blocks}), family).fits(vram_gib))
    return next(fitting, largest)


def _count(params: int) -> str:
    return f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.1f} M"


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)

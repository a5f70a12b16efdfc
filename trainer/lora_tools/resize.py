"""`lora resize`: a LoRA/LoCon at a lower rank, as sd-scripts' networks/resize_lora.py does it; DyLoRA by cutting.

SVD resize, per module: the update up @ down is decomposed, the largest singular values are kept (rank R, or
chosen per module by a dynamic method and capped by R), and the new alpha is scale * new rank, so
alpha / rank, the strength every loader applies, stays the module's old alpha / rank.

DyLoRA files are cut instead: DyLoRA trained its first r rows/columns to work alone for every r (in steps of
`unit`), so rank R keeps rows 0..R-1 of lora_down and columns 0..R-1 of lora_up, no SVD. During training a
sub-rank r ran at alpha / dim * sqrt(dim / r) (sd-scripts' dylora.py), so the cut file's alpha is
alpha * sqrt(R / dim): loaders then apply exactly the strength the sub-rank was trained at. (sd-scripts'
extract_lora_from_dylora keeps alpha unchanged, which applies the cut sqrt(dim / R) times stronger.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainer.adapters.spec import NetworkType
from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import UserError
from trainer.lora_tools.keys import LoraFile, Module, network_args

MIN_SV = 1e-6  # sd-scripts: a module whose largest singular value is below this is a zero matrix (rank 1)


@dataclass
class Resized:
    tensors: dict
    metadata: dict[str, str]
    old_rank: int
    ranks: dict[str, int]  # module -> new rank
    fro_retained: dict[str, float]  # module -> share of the Frobenius norm kept


def resize(lora: LoraFile, rank: int, conv_rank: int | None = None, method: str | None = None,
           param: float | None = None) -> Resized:
    lora.require_kohya("resize")
    kind = lora.network_type()
    _check(lora, kind, rank, method, param)
    if kind.nested_ranks:
        return _cut(lora, kind, rank)
    conv_rank = conv_rank or rank
    tensors = dict(lora.tensors)
    ranks, kept = {}, {}
    with torch.no_grad():
        for name, module in lora.modules.items():
            down, up = module.weights["lora_down.weight"], module.weights["lora_up.weight"]
            limit = conv_rank if down.dim() == 4 else rank  # sd-scripts: every 4-D module uses the conv rank
            new_down, new_up, new_alpha, kept[name] = _svd_resize(module, limit, method, param)
            tensors[f"{name}.lora_down.weight"] = new_down.to(down.dtype).contiguous()
            tensors[f"{name}.lora_up.weight"] = new_up.to(up.dtype).contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(new_alpha).to(down.dtype)
            ranks[name] = new_down.shape[0]
    old_rank = max(m.rank for m in lora.modules.values())
    metadata = _svd_metadata(lora.metadata, old_rank, rank, conv_rank, method, param, ranks, tensors)
    return Resized(tensors, metadata, old_rank, ranks, kept)


def _check(lora: LoraFile, kind: NetworkType, rank: int, method: str | None, param: float | None) -> None:
    if not kind.kohya_keys:
        *others, last = [other.label for other in NETWORK_TYPES.values() if other.kohya_keys]
        raise UserError(f"{lora.path}: resize is defined for {', '.join(others)} and {last} files; this is a "
                        f"{kind.label} (sd-scripts has no resize for it either)",
                        "retrain at the rank you want, or merge it into the base model with `lora merge`",
                        zh=f"{lora.path}：调整 rank 只支持 {', '.join(others)} 和 {last} 文件；这是 {kind.label}"
                        "（sd-scripts 也不能调整它）", hint_zh="请按想要的 rank 重新训练，或用 `lora merge` 合并进底模")
    if rank < 1:
        raise UserError(f"--rank: {rank} is not a rank", "give a whole number of 1 or more, e.g. --rank 16",
                        zh=f"--rank：{rank} 不是有效的 rank", hint_zh="请给 1 及以上的整数，例如 --rank 16")
    if (method is None) != (param is None):
        raise UserError("--dynamic-method and --dynamic-param go together",
                        "e.g. --dynamic-method sv_fro --dynamic-param 0.9 (--rank is then the highest rank)",
                        zh="--dynamic-method 和 --dynamic-param 要一起用",
                        hint_zh="例如 --dynamic-method sv_fro --dynamic-param 0.9（此时 --rank 是最高 rank）")
    if kind.nested_ranks and method:
        raise UserError(f"--dynamic-method: a {kind.label} file is cut at --rank, not resized by SVD",
                        f"leave --dynamic-method out for {kind.label} files",
                        zh=f"--dynamic-method：{kind.label} 文件是在 --rank 处截断，不用 SVD 调整",
                        hint_zh=f"{kind.label} 文件请不要写 --dynamic-method")
    bad = [m.name for m in lora.modules.values() if not m.kohya or "lora_mid.weight" in m.weights]
    if bad:
        raise UserError(f"{lora.path}: {len(bad)} module(s) are no plain lora_down/lora_up pair, e.g. {bad[0]}",
                        "resize handles kohya LoRA and LoCon modules",
                        zh=f"{lora.path}：有 {len(bad)} 个模块不是普通的 lora_down/lora_up 对，例如 {bad[0]}",
                        hint_zh="调整 rank 只支持 kohya 的 LoRA 和 LoCon 模块")


def _svd_resize(module: Module, limit: int, method: str | None, param: float | None):
    """sd-scripts' extract_linear/extract_conv: SVD of up @ down (no scale), keep new rank, alpha = scale * rank."""
    down, up = module.weights["lora_down.weight"].float(), module.weights["lora_up.weight"].float()
    weight = up.flatten(1) @ down.flatten(1)
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    new_rank = min(_new_rank(S, limit, method, param), S.shape[0])
    fro = float(S[:new_rank].pow(2).sum().sqrt() / S.pow(2).sum().sqrt()) if S[0] > 0 else 1.0
    new_up = (U[:, :new_rank] * S[:new_rank]).reshape(up.shape[0], new_rank, *up.shape[2:])
    new_down = Vh[:new_rank].reshape(new_rank, *down.shape[1:])
    return new_down, new_up, float(module.scale * new_rank), fro


def _new_rank(S: torch.Tensor, limit: int, method: str | None, param: float | None) -> int:
    """sd-scripts' rank_resize: the dynamic rank (index + 1), capped at --rank; a zero matrix gets rank 1."""
    if S[0] <= MIN_SV:
        return 1
    if method == "sv_ratio":  # keep singular values larger than the largest / param
        index = int(torch.sum(S > S[0] / param).item()) - 1
    elif method == "sv_cumulative":  # keep the smallest head whose sum reaches param of the total
        index = int(torch.searchsorted(torch.cumsum(S, 0) / S.sum(), param))
    elif method == "sv_fro":  # same on squares: the Frobenius norm reaches param of the original
        index = int(torch.searchsorted(torch.cumsum(S.pow(2), 0) / S.pow(2).sum(), param ** 2))
    else:
        return limit
    return min(max(0, min(index, len(S) - 1)) + 1, limit)


def _svd_metadata(metadata: dict[str, str], old_rank: int, rank: int, conv_rank: int, method: str | None,
                  param: float | None, ranks: dict[str, int], tensors: dict) -> dict[str, str]:
    """sd-scripts' metadata of a resized file: ss_network_dim/alpha ("Dynamic" for dynamic methods), a comment."""
    meta = dict(metadata)
    comment = metadata.get("ss_training_comment", "")
    if method:
        meta["ss_training_comment"] = f"Dynamic resize with {method}: {param} from {old_rank}; {comment}"
        meta["ss_network_dim"] = meta["ss_network_alpha"] = "Dynamic"
    else:
        conv = "" if conv_rank == rank else f" (conv: {conv_rank})"
        meta["ss_training_comment"] = f"dimension is resized from {old_rank} to {rank}{conv}; {comment}"
        meta["ss_network_dim"] = str(rank)
        name = next((n for n, r in ranks.items() if tensors[f"{n}.lora_down.weight"].dim() == 2), next(iter(ranks)))
        meta["ss_network_alpha"] = str(float(tensors[f"{name}.alpha"]))
    return meta


def _cut(lora: LoraFile, kind: NetworkType, rank: int) -> Resized:
    """A file whose ranks are nested (DyLoRA's): its first `rank` ranks, in steps of its network_args unit."""
    unit = int(network_args(lora.metadata).get("unit", 1))
    old_rank = max(m.rank for m in lora.modules.values())
    if rank > old_rank:
        raise UserError(f"--rank: {rank} is more than the {kind.label} file's rank {old_rank}",
                        f"a {kind.label} file can be cut to any rank up to {old_rank}",
                        zh=f"--rank：{rank} 超过了这个 {kind.label} 文件的 rank {old_rank}",
                        hint_zh=f"{kind.label} 文件可以截到不超过 {old_rank} 的任意 rank")
    if rank % unit:
        raise UserError(f"--rank: {rank} is not a multiple of the {kind.label} unit {unit}; only those ranks were "
                        "trained", f"use a multiple of {unit}",
                        zh=f"--rank：{rank} 不是 {kind.label} 单位 {unit} 的倍数；只有这些 rank 训练过",
                        hint_zh=f"请用 {unit} 的倍数")
    tensors = dict(lora.tensors)
    for name, module in lora.modules.items():
        dim = module.rank
        tensors[f"{name}.lora_down.weight"] = module.weights["lora_down.weight"][:rank].contiguous()
        tensors[f"{name}.lora_up.weight"] = module.weights["lora_up.weight"][:, :rank].contiguous()
        alpha = module.alpha if module.alpha is not None else float(dim)
        tensors[f"{name}.alpha"] = torch.tensor(alpha * math.sqrt(min(rank, dim) / dim)).to(
            module.weights["lora_down.weight"].dtype)
    meta = dict(lora.metadata)
    meta["ss_training_comment"] = (f"split from {kind.label}, rank {old_rank} to {rank}; "
                                   f"{lora.metadata.get('ss_training_comment', '')}")
    meta["ss_network_dim"] = str(rank)
    first = next(iter(lora.modules))
    meta["ss_network_alpha"] = str(float(tensors[f"{first}.alpha"]))
    ranks = {name: min(rank, m.rank) for name, m in lora.modules.items()}
    return Resized(tensors, meta, old_rank, ranks, dict.fromkeys(ranks, float("nan")))

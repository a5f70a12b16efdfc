"""LoKr (LyCORIS algo=lokr): each weight update is a Kronecker product of a small and a large factor, peft's LoKr.

`factor` sizes the small factor (-1: as balanced as possible, LyCORIS's default). A rank of FULL_MATRIX_RANK or more
(network_dim or conv_dim 10000, as LyCORIS and the LoKr presets published for it write it) trains both factors as
full matrices, at scale 1 as LyCORIS does, whatever the alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.adapters.lycoris import LycorisType, tucker
from trainer.adapters.spec import NetworkShape

if TYPE_CHECKING:
    import torch

FULL_MATRIX_RANK = 10000  # LyCORIS's lokr: a lora_dim this large means "use the full matrix"


@dataclass(frozen=True)
class LoKr(LycorisType):
    def peft_options(self, config: Any) -> dict[str, Any]:
        return {**super().peft_options(config), "decompose_factor": config.factor}

    def peft_config(self, shape: NetworkShape, targets: list[str], ranks: dict[str, int],
                    alphas: dict[str, float]) -> Any:
        from peft import LoKrConfig

        alphas = {pattern: _alpha(ranks[pattern], alpha) for pattern, alpha in alphas.items()}
        return LoKrConfig(r=shape.dim, alpha=_alpha(shape.dim, shape.alpha), target_modules=targets,
                          rank_pattern=ranks, alpha_pattern=alphas, **shape.options)

    def file_rank(self, weights: dict[str, torch.Tensor]) -> int | None:
        """None for a layer of two full matrices: LyCORIS ignores its alpha."""
        return next((weights[key].shape[0] for key in ("lokr_w1_b", "lokr_w2_b") if key in weights), None)

    def file_delta(self, weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """LyCORIS: dW = kron(w1, w2), times alpha / rank."""
        import torch

        w1, w2 = _factor(weights, "1"), _factor(weights, "2")
        if w2.dim() == 4 and w1.dim() == 2:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2)


def _alpha(rank: int, alpha: float) -> float:
    """peft scales by alpha / rank; full matrices train at scale 1 (LyCORIS ignores their alpha)."""
    return float(rank) if rank >= FULL_MATRIX_RANK else alpha


def _factor(w: dict[str, torch.Tensor], i: str) -> torch.Tensor:
    if f"lokr_w{i}" in w:
        return w[f"lokr_w{i}"]
    a, b = w[f"lokr_w{i}_a"], w[f"lokr_w{i}_b"]
    core = w.get(f"lokr_t{i}")
    if core is not None:
        return tucker(core, b, a)
    return a @ b


LOKR = LoKr("lokr", "LoKr", algo="lokr", own_keys=("factor",), file_keys=("lokr_",), kernel_key="lokr_w2",
            full_matrix_rank=FULL_MATRIX_RANK,
            tensors=("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"))

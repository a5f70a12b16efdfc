"""What a network type is: the contract every type module (lora.py, locon.py, loha.py, lokr.py, dylora.py) fills.

The data (names, label, which config keys it owns, conv layers, how its files show it) is torch-free: the schema,
the GUI and the advice read it. The torch side (the peft config it injects, its hooks after injection, its file
keys) is in methods that import torch, peft and the shared helpers of layers.py when they are called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

MAX_RANK = 1024  # the largest rank a factorised layer takes (network_dim, conv_dim)
Rename = Callable[[str], str]  # a module path as loaded -> the path kohya's names are made from


class Evidence(IntEnum):
    """How a LoRA file shows its network type; the type with the strongest evidence is the file's."""

    NONE = 0
    DEFAULT = 1  # nothing else matched (LoRA)
    SHAPE = 2  # its layers or ss_network_args (LoCon: conv modules or algo=locon)
    MODULE = 3  # an ss_network_module only it writes (networks.dylora)
    KEYS = 4  # tensors only it writes (LoHa's hada_*, LoKr's lokr_*)


@dataclass(frozen=True)
class FileFacts:
    """What the LoRA tools read of a file to tell its network type."""

    layouts: frozenset[str]  # the types whose key layout its modules are in (see NetworkType.file_keys)
    module: str  # ss_network_module
    args: dict[str, str]  # ss_network_args
    conv: bool  # some module adapts a 3x3 (or larger) convolution


@dataclass(frozen=True)
class NetworkShape:
    """What one network type needs to build its layers: rank/alpha, those of the conv layers, and its own options."""

    kind: NetworkType
    dim: int = 4
    alpha: float = 4.0
    conv_dim: int | None = None
    conv_alpha: float | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the type's own peft arguments (NetworkType.peft_options)


@dataclass(frozen=True)
class NetworkType(ABC):
    """One network type: its module holds one instance, of a subclass that fills the torch side."""

    name: str  # the network_type value
    label: str  # how people write it: LoRA, LoCon, LoHa, LoKr, DyLoRA
    module: str  # ss_network_module: the sd-scripts module that trains this type
    algo: str | None = None  # LyCORIS's algo= name, for lycoris.kohya
    convs: bool = False  # also adapts the UNet's ResNet 3x3 convs and down/upsamplers (conv_dim/conv_alpha)
    own_keys: tuple[str, ...] = ()  # config keys only this type reads (refused with other types); in ss_network_args
    nested_ranks: bool = False  # every prefix of its ranks was trained to work alone: a file is cut, not resized
    file_keys: tuple[str, ...] = ()  # how its modules' key suffixes start, when it has a key layout of its own
    kernel_key: str = ""  # with file_keys: the tensor whose shape shows the layer's kernel (a 3x3 conv: LoCon)
    rank_pairs: int = 1  # (down, up) factor pairs per adapted layer, for the memory estimate: LoHa 2; LoKr at
    # most 1 (its Kronecker factors are smaller than a LoRA's pair)
    full_matrix_rank: int | None = None  # a rank from which the layers train full matrices (LoKr: as LyCORIS)

    def takes_rank(self, rank: int) -> bool:
        """A rank this type trains: up to MAX_RANK, or from its full_matrix_rank on."""
        return rank <= MAX_RANK or (self.full_matrix_rank is not None and rank >= self.full_matrix_rank)

    kohya_keys: ClassVar[bool] = True  # saved as kohya's lora_down/lora_up/alpha (else LyCORIS's keys)
    own_lr_habits: ClassVar[bool] = False  # trains at learning rates of its own: no generic "LR too high" advice

    def check(self, config: Any) -> None:
        """Refuse settings this type cannot train: a RuleError (a ValueError) naming the keys, for the schema."""

    def peft_options(self, config: Any) -> dict[str, Any]:
        """This type's own arguments of its peft config, from the run's config."""
        return {}

    def recognises(self, facts: FileFacts) -> Evidence:
        """How strongly a LoRA file shows it is of this type (the LoRA tools' `lora info`, resize, convert)."""
        return Evidence.NONE

    # --- torch side -------------------------------------------------------------------------------------------
    @abstractmethod
    def peft_config(self, shape: NetworkShape, targets: list[str], ranks: dict[str, int],
                    alphas: dict[str, float]) -> Any:
        """The peft config that injects this type's layers (ranks/alphas: the conv layers' own, by pattern)."""

    def after_injection(self, module: torch.nn.Module, config: Any) -> None:
        """Hooks on a model part's layers once they are injected, before any weights are loaded."""

    @abstractmethod
    def state_dict(self, module: torch.nn.Module, prefix: str, rename: Rename | None) -> dict[str, torch.Tensor]:
        """A model part's trained layers in this type's file keys, under kohya's module names."""

    @abstractmethod
    def load_weights(self, module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str,
                     rename: Rename | None) -> set[str]:
        """Load a file of this type into a model part's layers; returns the keys used."""

    @abstractmethod
    def file_rank(self, weights: dict[str, torch.Tensor]) -> int | None:
        """The rank loaders divide alpha by, from one module's weights (suffix -> tensor); None if they ignore it."""

    @abstractmethod
    def file_delta(self, weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """One module's update of its layer's weight before alpha / rank, from its float32 weights."""


def set_keys(config: Any, *keys: str) -> list[str]:
    """The keys of a broken rule that are set: the ones a RuleError names for the GUI to mark."""
    return [key for key in keys if getattr(config, key)]

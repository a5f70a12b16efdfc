"""The network types Danlu trains, one module each: every consumer (schema, loop, families, advice, LoRA tools,
GUI) reads a type from NETWORK_TYPES and asks it, never its name.

Torch-free: the schema and the GUI import it; a type's torch side loads when its methods are called. A new type
is its module (a NetworkType, spec.py) and its entry here.
"""

from __future__ import annotations

from collections.abc import Iterable

from trainer.adapters.dylora import DYLORA
from trainer.adapters.locon import LOCON
from trainer.adapters.loha import LOHA
from trainer.adapters.lokr import LOKR
from trainer.adapters.lora import LORA
from trainer.adapters.spec import FileFacts, NetworkType

# In the order the GUI lists them; the first is the default.
NETWORK_TYPES: dict[str, NetworkType] = {kind.name: kind for kind in (LORA, LOCON, LOHA, LOKR, DYLORA)}


def layout_of(suffixes: Iterable[str]) -> NetworkType | None:
    """The type whose key layout a file module's weights (lora_down.weight, hada_w1_a, ...) are in; None when
    they are in none, or in more than one."""
    owners = {kind.name for suffix in suffixes for kind in NETWORK_TYPES.values()
              if any(suffix.startswith(start) for start in kind.file_keys)}
    return NETWORK_TYPES[owners.pop()] if len(owners) == 1 else None


def recognise(facts: FileFacts) -> NetworkType:
    """The type of a LoRA file: the one with the strongest evidence, the first registered on a tie."""
    return max(NETWORK_TYPES.values(), key=lambda kind: kind.recognises(facts))

"""blocks_to_swap, as sd-scripts' (library/custom_offloading_utils.py): the denoiser's last blocks keep their frozen
weights on the CPU and visit the device just while they run, in the forward and in the backward pass. The next
block's weights are copied ahead on a side CUDA stream, so the copy overlaps the current block's compute; at most
two swapped blocks are on the device at a time. On a CPU-only machine the same code runs with the CPU as the
device (moves that move nothing, no stream).

What moves is only the frozen base weights (every module whose own parameters take no gradient): the LoRA layers
of swapped blocks stay on the device with their gradients and optimizer state, so the optimizer step runs on the
device as for any other block. The weights' CPU copies never change (they are frozen), so sending a block back is
dropping its device copy, not a copy.

The backward pass needs a block's weights again: with gradient checkpointing the block's forward runs again (and
loads it); without, the weights the forward saved for the backward are saved as tokens (saved_tensors_hooks) that
load the block when the backward unpacks them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

import torch

from trainer.families.table import Family

# A weight saved for the backward pass, by reference: (block index, parameter, dtype, size, stride, offset from the
# parameter's own).
Token = tuple[int, torch.nn.Parameter, torch.dtype, torch.Size, tuple[int, ...], int]


@dataclass
class SwappedBlock:
    module: torch.nn.Module
    offloaded: list[torch.nn.Module]  # its modules whose own tensors are frozen: they move
    cpu: dict[int, tuple[torch.Tensor, torch.Tensor]]  # id(tensor) -> (that tensor, its CPU data)
    ready: torch.cuda.Event | None = None  # set while a prefetch is under way
    on_device: bool = False


def swapped_modules(denoiser: torch.nn.Module, family: Family, blocks_to_swap: int) -> list[torch.nn.Module]:
    """The blocks that swap, in the order they run: the last ones of each block list (family.swap_split)."""
    lists = [getattr(denoiser, name) for name in family.swappable_blocks]
    split = family.swap_split(blocks_to_swap)
    return [block for blocks, count in zip(lists, split) for block in list(blocks)[len(blocks) - count:]]


class BlockSwap:
    """Swaps the given blocks of `denoiser` between the CPU and `device`; wraps their forward to do so."""

    def __init__(self, denoiser: torch.nn.Module, blocks: list[torch.nn.Module], device: torch.device):
        self.denoiser = denoiser
        self.device = device
        self.blocks = [_swapped(block) for block in blocks]
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.last = -1  # the block that ran last; a lower index next means the backward pass
        self.loads: list[tuple[int, str]] = []  # (block, "forward" | "backward") per load: the log and tests read it
        self._weights = {id(t): (i, t) for i, block in enumerate(self.blocks) for t, _ in block.cpu.values()}
        denoiser.register_forward_pre_hook(self._forward_starts)
        for index, block in enumerate(self.blocks):
            block.module.forward = self._wrap(index, block.module.forward)

    @property
    def offloaded(self) -> set[torch.nn.Module]:
        return {module for block in self.blocks for module in block.offloaded}

    def place(self, device: torch.device) -> None:
        """Move the denoiser to `device`, but for the swapped blocks' frozen weights, which stay on the CPU."""
        for block in self.blocks:
            if block.on_device:
                self._offload(block)
        offloaded = self.offloaded
        for module in self.denoiser.modules():
            if module not in offloaded:
                module._apply(lambda t: t.to(device), recurse=False)

    def describe(self) -> str:
        size = sum(data.numel() * data.element_size() for b in self.blocks for _, data in b.cpu.values()) / 2**30
        return f"blocks_to_swap: {len(self.blocks)} blocks ({size:.2f} GiB of base weights) kept on the CPU"

    # --- the hooks ------------------------------------------------------------------------------------
    def _forward_starts(self, module: torch.nn.Module, args: tuple) -> None:
        self.last = -1

    def _wrap(self, index: int, forward: Callable) -> Callable:
        @wraps(forward)
        def swapped_forward(*args, **kwargs):
            step = 1 if index > self.last else -1  # a checkpointed block runs again in the backward, last first
            self._activate(index, step, "forward" if step > 0 else "backward")
            # Checkpointing saves nothing of the block's (it recomputes); otherwise weights are saved as tokens.
            if not torch.is_grad_enabled() or getattr(self.denoiser, "gradient_checkpointing", False):
                return forward(*args, **kwargs)
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                return forward(*args, **kwargs)
        return swapped_forward

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor | Token:
        base = tensor if tensor._base is None else tensor._base
        found = self._weights.get(id(base))
        if found is None or base is not found[1]:
            return tensor
        index, param = found
        offset = tensor.storage_offset() - param.storage_offset()
        return index, param, tensor.dtype, tensor.size(), tensor.stride(), offset

    def _unpack(self, saved: torch.Tensor | Token) -> torch.Tensor:
        if isinstance(saved, torch.Tensor):
            return saved
        index, param, dtype, size, stride, offset = saved
        if index != self.last:
            self._activate(index, -1, "backward")
        source = param.detach() if param.dtype == dtype else param.detach().to(dtype)  # fp8_base casts per layer
        return source.as_strided(size, stride, source.storage_offset() + offset)

    # --- moving -----------------------------------------------------------------------------------------
    def _activate(self, index: int, step: int, direction: str) -> None:
        """Block `index` on the device, the next one in this direction on its way, every other one on the CPU."""
        self.last = index
        following = index + step
        keep = {index, following}
        for other, block in enumerate(self.blocks):
            if other not in keep and block.on_device:
                self._offload(block)
        if not self.blocks[index].on_device:
            self.loads.append((index, direction))
            self._load(self.blocks[index])
        self._wait(self.blocks[index])
        if 0 <= following < len(self.blocks) and not self.blocks[following].on_device:
            self.loads.append((following, direction))
            self._load(self.blocks[following], ahead=True)

    def _load(self, block: SwappedBlock, ahead: bool = False) -> None:
        if self.stream is None or not ahead:
            for tensor, data in block.cpu.values():
                tensor.data = data.to(self.device)
        else:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                for tensor, data in block.cpu.values():
                    tensor.data = data.to(self.device, non_blocking=True)
                block.ready = torch.cuda.Event()
                block.ready.record(self.stream)
        block.on_device = True

    def _wait(self, block: SwappedBlock) -> None:
        """Compute waits for a prefetch; the copies, made on the side stream, are then in use on the compute one."""
        if block.ready is None:
            return
        current = torch.cuda.current_stream(self.device)
        current.wait_event(block.ready)
        for tensor, _ in block.cpu.values():
            tensor.data.record_stream(current)
        block.ready = None

    def _offload(self, block: SwappedBlock) -> None:
        self._wait(block)  # a block prefetched but never used: its copy must end before its memory is reused
        for tensor, data in block.cpu.values():
            tensor.data = data
        block.on_device = False


def _swapped(block: torch.nn.Module) -> SwappedBlock:
    """The block's frozen modules and the CPU data of their tensors, pinned so that copies run asynchronously."""
    offloaded = [module for module in block.modules() if _own_tensors(module)
                 and not any(p.requires_grad for p in module.parameters(recurse=False))]
    cpu = {}
    for tensor in (t for module in offloaded for t in _own_tensors(module)):
        tensor.data = tensor.data.cpu().pin_memory() if torch.cuda.is_available() else tensor.data.cpu()
        cpu[id(tensor)] = (tensor, tensor.data)
    return SwappedBlock(block, offloaded, cpu)


def _own_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(recurse=False), *(b for b in module.buffers(recurse=False) if b is not None)]

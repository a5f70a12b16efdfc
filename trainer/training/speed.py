"""How a step runs fast on this machine: torch's CPU thread count, and the denoiser's channels_last layout and
torch_compile (docs/benchmarks.md has the figures)."""

from __future__ import annotations

import os

import torch

from trainer.config import TrainConfig


def cpu_threads(usable_cores: int, default_threads: int) -> int:
    """Threads for one torch operation: one core left for the rest of the machine, never more than torch's default.

    torch's threads wait for each other at the end of every operation, so when other work takes a core from one of
    them, every operation waits for that thread: with 2 threads on 2 cores that a test run shared, a step of the tiny
    test model went from 0.06 s to several seconds, while 1 thread kept its pace (docs/benchmarks.md).
    """
    return max(1, min(default_threads, usable_cores - 1))


def use_cpu_threads() -> str:
    """Set torch's intra-op thread count (cpu_threads) unless OMP_NUM_THREADS chose it (torchrun sets 1 per process
    for several); returns a log line."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if os.environ.get("OMP_NUM_THREADS"):
        return f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS) on {cores} cores"
    torch.set_num_threads(cpu_threads(cores, torch.get_num_threads()))
    return f"torch threads: {torch.get_num_threads()} on {cores} cores (one left free; OMP_NUM_THREADS overrides)"


def speed_up_denoiser(denoiser: torch.nn.Module, config: TrainConfig, device: torch.device) -> list[str]:
    """channels_last for a denoiser with convolutions (the UNets) on CUDA, where cuDNN's convolutions are faster in
    that layout; torch_compile compiles its forward with dynamo_backend. Done once the LoRA is in, so its layers
    are compiled and laid out too. Returns log lines."""
    lines = []
    if device.type == "cuda" and any(isinstance(module, torch.nn.Conv2d) for module in denoiser.modules()):
        denoiser.to(memory_format=torch.channels_last)
        lines.append("channels_last: the denoiser's convolutions")
    if config.torch_compile:
        denoiser.compile(backend=config.dynamo_backend)
        lines.append(f"torch_compile: the denoiser's forward, backend {config.dynamo_backend} (compiled in the "
                     "first steps)")
    return lines

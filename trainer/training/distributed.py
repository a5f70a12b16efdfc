"""Several processes (docs/training.md, "Several GPUs"): the process group's and DDP's options from the config.

Parameters may take no gradient in a step: a trained text encoder's last layers with clip_skip 2 or more,
SDXL's first text encoder's last layer (its penultimate output is used). DDP then waits forever for their
gradients, so it looks for unused parameters every step, as the DDP error message advises, unless
ddp_static_graph tells it the set of used parameters never changes (it then finds them once).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object

from trainer.config import TrainConfig
from trainer.dataset.share import ALONE, Share


def process_group_options(config: TrainConfig) -> dict[str, Any]:
    """For accelerate's PartialState, which starts the process group: ddp_timeout in minutes."""
    return {"timeout": timedelta(minutes=config.ddp_timeout)} if config.ddp_timeout else {}


def ddp_options(config: TrainConfig) -> list[DistributedDataParallelKwargs]:
    """For the Accelerator's kwargs_handlers: how DDP wraps the trained parts."""
    return [DistributedDataParallelKwargs(find_unused_parameters=not config.ddp_static_graph,
                                          gradient_as_bucket_view=config.ddp_gradient_as_bucket_view,
                                          static_graph=config.ddp_static_graph)]


def share_of(accelerator: Accelerator) -> Share:
    """This process's share of the caching work (trainer/dataset/share.py)."""
    if accelerator.num_processes == 1:
        return ALONE
    return Share(accelerator.process_index, accelerator.num_processes, lambda obj: gather_object([obj]))

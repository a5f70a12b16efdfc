"""Danlu's trainer.

Importing it quiets what optional libraries print while they are imported (torchao's missing CUDA kernels on a
CPU, a torch deprecation note, diffusers' torchao probe, transformers' note that torchvision is absent): chatter
that would otherwise open every run's output.
"""

import logging
import os

for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

"""Keeping the libraries' chatter out of what users read."""

from __future__ import annotations

import logging
import sys


def quiet_libraries() -> None:
    """Library chatter (progress bars, dtype notes) would drown the training log users read."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# Installed packages that peft imports at its own import (its bitsandbytes and torchao LoRA layers): bitsandbytes
# then asks the Hugging Face Hub for CPU kernels and logs a failure when offline, torchao logs torch deprecation
# notes. A process that will not use one of them hides it before peft loads, so no run pays for what it does not use.
PEFT_OPTIONAL = ("bitsandbytes", "torchao")
# Loggers that speak while a package imports, not about the run: bitsandbytes (and the kernels package it asks)
# about CPU kernels it cannot fetch offline, torchao about its optional CUDA extensions, torch about torchao's
# deprecated registrations. Their errors still show.
IMPORT_CHATTER = ("bitsandbytes", "kernels", "torchao", "torch.utils._pytree")


def hide_unused(needed: set[str]) -> None:
    """Make the PEFT_OPTIONAL packages not in `needed` look absent to this process (importlib.util.find_spec gives
    None, an import fails as for a missing package). Only in a `python -m trainer` process, whose one job is known
    (a test session or another host program keeps its imports), and only before peft loads: it decides then.
    The packages it keeps import quietly (quiet_import_chatter)."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main, "name", None) != "trainer.__main__":
        return
    quiet_import_chatter()
    if "peft" in sys.modules:
        return
    for name in PEFT_OPTIONAL:
        if name not in needed and name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # Python's own marker of "not importable"


def quiet_import_chatter() -> None:
    """The log opens with the run, not with what optional packages said while importing (IMPORT_CHATTER)."""
    for name in IMPORT_CHATTER:
        logging.getLogger(name).setLevel(logging.ERROR)

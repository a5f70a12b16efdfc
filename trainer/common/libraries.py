"""Keeping the libraries' chatter out of what users read."""

from __future__ import annotations

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


def hide_unused(needed: set[str]) -> None:
    """Make the PEFT_OPTIONAL packages not in `needed` look absent to this process (importlib.util.find_spec gives
    None, an import fails as for a missing package). Only in a `python -m trainer` process, whose one job is known
    (a test session or another host program keeps its imports), and only before peft loads: it decides then."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if "peft" in sys.modules or getattr(main, "name", None) != "trainer.__main__":
        return
    for name in PEFT_OPTIONAL:
        if name not in needed and name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # Python's own marker of "not importable"

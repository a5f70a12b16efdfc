"""TensorBoard as the GUI starts it (ui/tensorboard.py): it runs in this process and ends when the GUI does.

A GUI killed with SIGKILL runs no atexit handler, and Linux's PDEATHSIG is not in Python's standard library, so a
thread here polls the parent's pid: when the GUI is gone this process is re-parented and exits.
Run as `python -m ui.tensorboard_watch TENSORBOARD_ARGS...`.
"""

from __future__ import annotations

import os
import sys
import threading
import time

POLL_S = 1.0


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(0)  # TensorBoard's server threads would keep a normal exit waiting


def main() -> None:
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    from tensorboard.main import run_main

    sys.argv = ["tensorboard", *sys.argv[1:]]
    run_main()


if __name__ == "__main__":
    main()

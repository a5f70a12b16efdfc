"""TensorBoard for a run's tb/ folder, on localhost, started once per folder and kept until the GUI exits (or is
killed: ui/tensorboard_watch.py)."""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import time
from pathlib import Path

_servers: dict[Path, tuple[subprocess.Popen, str]] = {}
_REPO = Path(__file__).resolve().parent.parent  # where `-m ui.tensorboard_watch` is found
START_WAIT_S = 20.0


def free_port(host: str = "127.0.0.1", start: int = 6006, tries: int = 100) -> int:
    """The first port from `start` nobody listens on."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((host, port)) != 0:
                return port
    raise OSError(f"no free port between {start} and {start + tries - 1}")


def open_tensorboard(logdir: Path) -> str:
    """The URL of a TensorBoard showing logdir (started if needed; an argument list, never a shell).
    Raises OSError when it does not come up."""
    logdir = logdir.resolve()
    running = _servers.get(logdir)
    if running is not None and running[0].poll() is None:
        return running[1]
    port = free_port()
    argv = [sys.executable, "-m", "ui.tensorboard_watch", "--logdir", str(logdir), "--host", "127.0.0.1",
            "--port", str(port)]  # ui/tensorboard_watch.py: it ends with this process, however this one ends
    log = logdir.parent / "tensorboard.log"  # its chatter; a pipe nobody reads would fill up and block it
    with open(log, "ab") as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   cwd=_REPO)
    url = f"http://127.0.0.1:{port}/"
    _wait_listening(process, port, log)
    _servers[logdir] = (process, url)
    return url


def _wait_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            raise OSError(reason[-1] if reason else f"exit code {process.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    process.kill()
    raise OSError(f"not listening on port {port} after {START_WAIT_S:g}s")


@atexit.register
def _stop_all() -> None:
    for process, _ in _servers.values():
        if process.poll() is None:
            process.terminate()

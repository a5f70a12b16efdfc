"""Seconds from `python app.py --no-browser --port P` to the first HTTP 200 on http://127.0.0.1:P/.

    .venv/bin/python bench/gui_start.py [--repo PATH ...] [--runs 3]

Each --repo (default: this repository) is started with its own .venv/bin/python and its own DANLU_HOME, made
warm first: the demo model and dataset built and the demo config saved as the last form (DANLU_HOME/form.yaml),
as after any earlier session where Check or Start was pressed. The figure is then the page's own start, not the
demo's first build. `--no-form` leaves form.yaml out: each start then prepares the demo config in a child
process (`python -m trainer demo --prepare-only`, which imports torch) before the page is built. Each start
is ended with its whole process group (the app and any child it started).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 300.0
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def warm_home(repo: Path, home: Path, with_form: bool) -> None:
    """Build the demo under home/demo with the repository's own trainer; its config becomes the last form."""
    python = repo / ".venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "trainer", "demo", "--dir", str(home / "demo"), "--prepare-only"], cwd=repo,
                   env=_env(repo, home), check=True, capture_output=True, timeout=START_TIMEOUT_S)
    if with_form:
        shutil.copy(home / "demo" / "config.yaml", home / "form.yaml")


def time_start(repo: Path, home: Path) -> float:
    """One start: seconds until GET / answers 200; the app is then ended."""
    port = free_port()
    argv = [str(repo / ".venv" / "bin" / "python"), "app.py", "--no-browser", "--port", str(port)]
    started = time.perf_counter()
    app = subprocess.Popen(argv, cwd=repo, env=_env(repo, home), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.perf_counter() - started < START_TIMEOUT_S:
            if app.poll() is not None:
                raise RuntimeError(f"{repo}: app.py ended with exit status {app.returncode}")
            if _answers(f"http://127.0.0.1:{port}/"):
                return time.perf_counter() - started
            time.sleep(POLL_S)
        raise RuntimeError(f"{repo}: no answer within {START_TIMEOUT_S:g} s")
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _env(repo: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "DANLU_HOME": str(home), "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, action="append", help="a Danlu checkout with its .venv (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-form", action="store_true", help="no saved form: the demo config is prepared")
    args = parser.parse_args(argv)
    repos = [repo.resolve() for repo in args.repo or [REPO]]
    print(f"load average (1, 5, 15 min) before: {os.getloadavg()}; {os.cpu_count()} cores")
    print("| repository | runs (s) | median (s) |\n|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="danlu-gui-start-") as root:
        homes = [Path(root) / f"home{index}" for index in range(len(repos))]
        for repo, home in zip(repos, homes):
            warm_home(repo, home, with_form=not args.no_form)
        times: list[list[float]] = [[] for _ in repos]
        for _ in range(args.runs):  # the repositories in turn: a change of load weighs on each alike
            for repo, home, seconds in zip(repos, homes, times):
                seconds.append(time_start(repo, home))
        for repo, seconds in zip(repos, times):
            print(f"| {repo} | {', '.join(f'{t:.1f}' for t in seconds)} | {statistics.median(seconds):.1f} |")
    print(f"load average (1, 5, 15 min) after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

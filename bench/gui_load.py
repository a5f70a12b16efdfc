"""50 browser-like clients poll a running training through the GUI on 127.0.0.1; the GUI's memory is measured.

    .venv/bin/python bench/gui_load.py [--clients 50] [--seconds 60] [--rounds 3] [--idle 30]

A tiny demo training (CPU, a very long max_train_steps) runs from the CLI in a fresh DANLU_HOME whose last form
names its output_dir, so the GUI's Run tab follows it. Each client is a Gradio session as a browser makes it: it
holds the heartbeat stream open (closing it is what a closed tab looks like to Gradio) and, about once a second,
runs the Run tab's poll (the timer tick) through the queue, reading the result stream to its end. Each round is
`--clients` new sessions for `--seconds`; the GUI process's RSS is printed before, after each round and after
`--idle` seconds without clients. Bounded: everything it starts is ended with its process group.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
START_TIMEOUT_S = 300.0
POLL_S = 1.0  # the Run tab's timer (ui/run_tab.py POLL_S)


@dataclass
class Tally:
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, error: str | None) -> None:
        with self.lock:
            self.polls += 1
            if error:
                self.errors.append(error)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DANLU_HOME": str(home), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False"}


def start_training(home: Path) -> subprocess.Popen:
    """The demo's config, made to run for hours, trained from the CLI; it is also the GUI's last form."""
    subprocess.run([PYTHON, "-m", "trainer", "demo", "--dir", str(home / "demo"), "--prepare-only"], cwd=REPO,
                   env=_env(home), check=True, capture_output=True, timeout=START_TIMEOUT_S)
    config_path = home / "demo" / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config.update(max_train_steps=1_000_000, max_train_epochs=None, save_every_n_epochs=None,
                  sample_every_n_steps=None, sample_every_n_epochs=None)
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    (home / "form.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.Popen([PYTHON, "-m", "trainer", "train", str(config_path)], cwd=REPO, env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def start_gui(home: Path, port: int) -> subprocess.Popen:
    app = subprocess.Popen([PYTHON, "app.py", "--no-browser", "--port", str(port)], cwd=REPO, env=_env(home),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"app.py ended with exit status {app.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                if response.status == 200:
                    return app
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the GUI did not answer")


def poll_request(port: int) -> tuple[int, list]:
    """The Run tab's poll: the timer tick with the most outputs, and its inputs' initial values."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as response:
        config = json.load(response)
    components = {c["id"]: c for c in config["components"]}
    ticks = [(index, dep) for index, dep in enumerate(config["dependencies"])
             if any(trigger == "tick" for _, trigger in dep["targets"])]
    index, dep = max(ticks, key=lambda item: len(item[1]["outputs"]))
    values = [components[i].get("props", {}).get("value") for i in dep["inputs"]]
    return dep.get("id", index), values


def client(port: int, fn_index: int, data: list, until: float, tally: Tally) -> None:
    """One browser session: its heartbeat held open, the poll run about once a second until `until`."""
    session = uuid.uuid4().hex[:11]
    heartbeat = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    heartbeat.request("GET", f"/gradio_api/heartbeat/{session}")
    heartbeat.getresponse()  # the stream stays open until the connection closes
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            tally.add(_poll_once(port, fn_index, data, session))
            time.sleep(max(0.0, POLL_S - (time.monotonic() - started)))
    finally:
        heartbeat.close()  # the tab is closed


def _poll_once(port: int, fn_index: int, data: list, session: str) -> str | None:
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                       "trigger_id": None}).encode()
    try:
        join = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/queue/join", body,
                                      {"Content-Type": "application/json"})
        with urllib.request.urlopen(join, timeout=60):
            pass
        url = f"http://127.0.0.1:{port}/gradio_api/queue/data?session_hash={session}"
        with urllib.request.urlopen(url, timeout=60) as stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return None if message.get("success") else f"failed: {str(message.get('output'))[:200]}"
        return "stream ended without process_completed"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def round_of(port: int, fn_index: int, data: list, clients: int, seconds: float) -> Tally:
    tally, until = Tally(), time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(port, fn_index, data, until, tally)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return tally


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args(argv)
    from ui.tensorboard import free_port

    with tempfile.TemporaryDirectory(prefix="danlu-load-") as home_text:
        home, port = Path(home_text), free_port("127.0.0.1", 7900)
        training = start_training(home)
        app = None
        try:
            app = start_gui(home, port)
            gui = psutil.Process(app.pid)
            fn_index, data = poll_request(port)
            print(f"GUI RSS at start: {rss_mb(gui):.0f} MB")
            failed = False
            for number in range(1, args.rounds + 1):
                tally = round_of(port, fn_index, data, args.clients, args.seconds)
                failed = failed or bool(tally.errors) or training.poll() is not None
                print(f"round {number}: {args.clients} clients x {args.seconds:g} s: {tally.polls} polls, "
                      f"{len(tally.errors)} errors; GUI RSS {rss_mb(gui):.0f} MB"
                      + (f"; first error: {tally.errors[0]}" if tally.errors else ""))
            time.sleep(args.idle)
            print(f"after {args.idle:g} s idle: GUI RSS {rss_mb(gui):.0f} MB; training still running: "
                  f"{training.poll() is None}")
        finally:
            if app is not None:
                _end(app)
            _end(training)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())

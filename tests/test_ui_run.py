"""The Run tab's pieces without a browser: the monitor a restarted GUI reattaches with, the rendering of a run
(progress, failure banner with the last log lines, samples), and TensorBoard on localhost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import REPO

from trainer.config.io import validate_config
from trainer.run import runner
from trainer.run.state import Diagnosis, RunState
from ui import run_view
from ui.monitor import RunMonitor
from ui.tensorboard import open_tensorboard

pytestmark = pytest.mark.usefixtures("fresh_runner")


def test_a_restarted_gui_reattaches_and_stops_the_training(make_config, tmp_path):
    out = tmp_path / "out"
    first = RunMonitor()
    handle = first.start(validate_config(make_config(output_dir=str(out), max_train_steps=100000)))
    runner._active = None  # a new GUI process knows nothing of the first
    restarted = RunMonitor()
    deadline = time.monotonic() + 240
    state = None
    while time.monotonic() < deadline and (state is None or state.step < 2):
        state = restarted.poll([out])
        time.sleep(0.3)
    assert restarted.run_dir == handle.run_dir and state.step >= 2 and state.status == "running"
    assert restarted.stop(120) == "stopped"
    final = restarted.poll([out])
    assert final.status == "stopped" and final.checkpoints
    saved = final.checkpoints[-1].path
    assert saved.endswith(".safetensors") and (out / saved).is_file()  # the clean stop saved the LoRA


def test_a_failed_run_shows_its_reason_hint_and_last_log_lines():
    state = RunState()
    state.apply([{"type": "plan", "total_steps": 10, "epochs": 2}, {"type": "step", "step": 3, "epoch": 1,
                                                                    "loss": 0.2, "it_s": 2.0, "eta_s": 3.5}])
    state.process_died(Diagnosis("the GPU ran out of memory", "lower train_batch_size", ["line a", "CUDA <oom>"]))
    banner = run_view.banners_html(state, "zh")
    assert "the GPU ran out of memory" in banner and "lower train_batch_size" in banner and "建议" in banner
    assert "CUDA &lt;oom&gt;" in banner  # log lines are escaped, not rendered as HTML
    progress = run_view.progress_html(state, "en")
    assert 'data-step="3"' in progress and "step 3 / 10" in progress and 'data-status="failed"' in progress


def test_samples_are_shown_newest_epoch_first_from_a_servable_copy(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "samples").mkdir(parents=True)
    for name in ("e0001-s000005-p0.png", "e0002-s000010-p0.png"):
        (run_dir / "samples" / name).write_bytes(b"png")
    state = RunState()
    state.apply([{"type": "sample", "path": str(run_dir / "samples" / "e0001-s000005-p0.png"), "epoch": 1,
                  "step": 5, "prompt": "a cat"},
                 {"type": "sample", "path": "samples/e0002-s000010-p0.png", "epoch": 2, "step": 10, "prompt": "b"}])
    items = run_view.gallery_items(state, run_dir, "en")
    assert [caption for _, caption in items] == ["epoch 2 · b", "epoch 1 · a cat"]
    assert all(str(path).startswith(str(run_view.PREVIEW_CACHE)) for path, _ in items)


def test_tensorboard_serves_the_run_on_localhost(tmp_path):
    logdir = tmp_path / "run" / "tb"
    logdir.mkdir(parents=True)
    url = open_tensorboard(logdir)
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    assert open_tensorboard(logdir) == url  # one server per folder


def _gui_with_tensorboard(logdir: Path) -> subprocess.Popen:
    """A GUI-like process that opens TensorBoard on logdir, prints its pid and waits for a line on stdin."""
    script = ("import sys\nfrom pathlib import Path\nfrom ui import tensorboard\n"
              "tensorboard.open_tensorboard(Path(sys.argv[1]))\n"
              "print(next(iter(tensorboard._servers.values()))[0].pid, flush=True)\nsys.stdin.readline()\n")
    return subprocess.Popen([sys.executable, "-c", script, str(logdir)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_tensorboard_listens_on_localhost_only_and_ends_with_the_gui(tmp_path):
    """The GUI's TensorBoard is reachable from this computer only, and a GUI that exits takes it along."""
    gui = _gui_with_tensorboard(tmp_path)
    server = psutil.Process(int(gui.stdout.readline()))
    listening = [c.laddr.ip for c in server.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and set(listening) == {"127.0.0.1"}
    gui.communicate("\n", timeout=60)
    server.wait(60)  # raises if TensorBoard outlives the GUI


def test_an_adaptive_optimizer_run_shows_its_found_step_size():
    state = RunState()
    state.apply([{"type": "step", "step": 1, "loss": 0.1, "lr": 1.0, "lr_effective": {"unet": 2e-6}},
                 {"type": "step", "step": 2, "loss": 0.1, "lr": 1.0, "lr_effective": {"unet": 8e-5}}])
    frame = run_view.lr_frame(state, "en")
    found = frame[frame.series == "d·lr"]
    assert list(found.lr) == [2e-6, 8e-5] and list(frame[frame.series == "lr"].lr) == [1.0, 1.0]


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_tensorboard_ends_with_a_killed_gui(tmp_path, signal_name):
    """No atexit runs in a GUI killed with SIGKILL (nor, by default, SIGTERM): TensorBoard watches its parent."""
    gui = _gui_with_tensorboard(tmp_path)
    server = psutil.Process(int(gui.stdout.readline()))
    gui.send_signal(getattr(signal, signal_name))
    gui.wait(60)
    server.wait(60)  # raises if TensorBoard outlives the GUI

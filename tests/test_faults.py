"""Faults a run survives: SIGTERM ends it like STOP, a rerun cleans what a killed save left, bad latent caches are
rebuilt (tiny SD1.5 model and the demo dataset)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import safetensors
import torch
from conftest import REPO, read_events, run_cli, write_config
from safetensors.torch import save_file

from trainer.__main__ import main
from trainer.dataset.latents import CACHE_SUFFIX
from trainer.run.events import TERMINATED

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def wait_for_line(path, text: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(encoding="utf-8"):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {path}")


def test_sigterm_saves_and_ends_like_stop(tmp_path, make_config):
    config = write_config(tmp_path / "c.yaml", make_config(max_train_steps=100000))
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "trainer", "train", str(config), "--run-dir", str(run_dir)],
                               cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(run_dir / "events.jsonl", '"type": "step"', process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    finished = read_events(run_dir)[-1]
    assert finished["type"] == "finished" and finished["status"] == "stopped" and "forced" not in finished
    assert (tmp_path / "out" / "test.safetensors").is_file()
    assert "SIGTERM" in (run_dir / "train.log").read_text(encoding="utf-8")


def test_a_second_sigterm_ends_at_once(tmp_path):
    script = ("import os, signal, sys, time\nfrom pathlib import Path\nfrom trainer.run.events import RunLog\n"
              "log = RunLog(Path(sys.argv[1]))\nos.kill(os.getpid(), signal.SIGTERM)\nassert log.stop_requested()\n"
              "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(120)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == TERMINATED, done.stderr
    last = read_events(tmp_path)[-1]
    assert (last["type"], last["status"], last["forced"]) == ("finished", "stopped", True)


def test_a_rerun_cleans_leftovers_and_rebuilds_bad_latent_caches(tmp_path, make_config, train_dir):
    data = shutil.copytree(train_dir, tmp_path / "data")
    out = tmp_path / "out"
    settings = make_config(train_data_dir=str(data), cache_latents=True, cache_latents_to_disk=True,
                           max_train_steps=2, overwrite=True)
    config = write_config(tmp_path / "c.yaml", settings)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "first")]) == 0
    caches = sorted(data.rglob(f"*{CACHE_SUFFIX}"))
    for cache in caches:  # the stamp still matches: only the tensors tell
        with safetensors.safe_open(str(cache), "pt") as handle:
            stamp, shape = handle.metadata(), handle.get_slice("latent").get_shape()
        save_file({"latent": torch.full(shape, float("nan"))}, str(cache), stamp)
    # saves this run does not make itself: only the cleanup removes them
    ours = [out / ".test-000001.safetensors.4242-1.partial", out / "test-step00000004-state.partial"]
    others = [out / ".other.safetensors.4242-1.partial", out / "mine-state.partial", out / "test.partial"]
    for path in ours + others:
        path.mkdir() if path.name.endswith("state.partial") else path.write_bytes(b"half")
    check = run_cli("check", config)
    assert check.returncode == 0 and ".test-000001.safetensors.4242-1.partial" in check.stdout
    assert "killed while saving" in check.stdout and all(path.exists() for path in ours)

    assert main(["train", str(config), "--run-dir", str(tmp_path / "second")]) == 0
    assert not any(path.exists() for path in ours) and all(path.exists() for path in others)
    losses = [event["loss"] for event in read_events(tmp_path / "second") if event["type"] == "step"]
    assert losses and all(math.isfinite(loss) for loss in losses)
    with safetensors.safe_open(str(caches[0]), "pt") as handle:
        assert torch.isfinite(handle.get_tensor("latent")).all()
    assert json.loads((tmp_path / "second" / "events.jsonl").read_text().splitlines()[-1])["status"] == "completed"

"""Shared fixtures: tiny models and a small dataset built locally, and helpers to run the trainer."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest
import yaml
from tiny_flux import build_tiny_flux

from trainer.demo.data import build_demo_dataset
from trainer.families.tiny_sd import build_tiny_sd

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd1") / "model", "sd1")


@pytest.fixture(scope="session")
def tiny_sd2v(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd2v") / "model", "sd2v")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sdxl") / "model", "sdxl")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    """FLUX.1-dev shrunk: guidance_embeds, 1 double + 1 single block."""
    return build_tiny_flux(tmp_path_factory.mktemp("flux") / "model", "dev")


@pytest.fixture(scope="session")
def tiny_flux_schnell(tmp_path_factory) -> Path:
    """FLUX.1-schnell shrunk: no guidance embedding, no timestep shift."""
    return build_tiny_flux(tmp_path_factory.mktemp("flux_schnell") / "model", "schnell")


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def make_config(tmp_path, tiny_sd1, train_dir):
    """A small, fast config dict; keyword arguments override any key."""

    def make(**overrides) -> dict:
        config = {
            "pretrained_model_name_or_path": str(tiny_sd1), "train_data_dir": str(train_dir),
            "output_dir": str(tmp_path / "out"), "output_name": "test", "resolution": "64",
            "bucket_reso_steps": 16, "min_bucket_reso": 64, "max_bucket_reso": 128, "train_batch_size": 2,
            "max_train_epochs": None, "max_train_steps": 4, "network_dim": 4, "network_alpha": 2,
            "learning_rate": 1e-3, "mixed_precision": "no", "save_precision": "float",
            "max_data_loader_n_workers": 0, "seed": 7,
        }
        config.update(overrides)
        return config

    return make


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def read_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def only_run_dir(output_dir: Path) -> Path:
    runs = sorted((output_dir / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def fresh_runner(monkeypatch):
    """The GUI's process runner with no active run; no training a test started outlives it."""
    from trainer.run import runner

    monkeypatch.setattr(runner, "_active", None)
    yield
    handle = runner._active
    if handle is not None and handle.alive:
        handle._kill_group()

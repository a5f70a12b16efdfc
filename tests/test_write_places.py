"""Where a training writes: one training at a time per output_dir (the lock file, stale locks, the CLI's refusal,
the GUI seeing a CLI run), and the write places checked before any model loads."""

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import REPO, run_cli, write_config

from trainer.checks.preflight import run_preflight
from trainer.common import places
from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.run import runner
from trainer.run.lock import LOCK_FILE, OutputBusy, OutputLock, read_holder

HOLD = """
import sys, time
from pathlib import Path
from trainer.run.lock import OutputLock
out = Path(sys.argv[1])
with OutputLock(out) as lock:
    (out / "runs" / "cli").mkdir(parents=True)
    lock.record_run(out / "runs" / "cli")
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A process of this computer holding tmp_path/out's lock, as a training started from a terminal does."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    yield out, holder
    holder.kill()
    holder.wait(30)


def test_the_lock_names_its_process_and_is_removed_at_the_end(tmp_path):
    with OutputLock(tmp_path) as lock:
        lock.record_run(tmp_path / "runs" / "a")
        holder = read_holder(tmp_path)
        assert holder.pid == os.getpid() and holder.alive and holder.run_dir == (tmp_path / "runs" / "a").resolve()
        with pytest.raises(OutputBusy) as refused, OutputLock(tmp_path):
            pass
        assert str(tmp_path) in refused.value.message and f"PID {os.getpid()}" in refused.value.message
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over(tmp_path):
    """A killed training's lock: its pid now names another process (or none), whose start time differs."""
    for pid in (os.getpid(), 2**22 + 12345):
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started_at": 1.0}))
        with OutputLock(tmp_path):
            assert read_holder(tmp_path).started_at != 1.0
    (tmp_path / LOCK_FILE).write_text('{"pid": 1')  # cut short by a kill while written
    with OutputLock(tmp_path):
        assert read_holder(tmp_path).pid == os.getpid()


def test_a_second_training_is_refused_and_the_gui_sees_the_first(held, make_config, fresh_runner):
    out, holder = held
    config = write_config(out.parent / "c.yaml", make_config(output_dir=str(out)))
    result = run_cli("train", config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(out) in result.stderr and f"PID {holder.pid}" in result.stderr
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["cli"]  # the refused run made no folder

    found = runner.find_running([out])
    assert found is not None and (found.pid, found.run_dir, found.alive) == (holder.pid, out / "runs" / "cli", True)
    with pytest.raises(runner.AlreadyRunning, match=f"PID {holder.pid}"):
        runner.start(validate_config(make_config(output_dir=str(out))))
    holder.kill()
    holder.wait(30)
    assert not found.alive


def test_an_output_dir_that_is_a_file_is_refused_before_anything_loads(tmp_path, make_config):
    target = tmp_path / "out"
    target.write_text("not a folder")
    result = run_cli("train", write_config(tmp_path / "c.yaml", make_config(output_dir=str(target))))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "output_dir" in result.stderr and str(target) in result.stderr and "is a file" in result.stderr
    assert target.read_text() == "not a folder"


def test_write_places_are_checked_with_their_keys(tmp_path, make_config, train_dir, monkeypatch):
    target = tmp_path / "a file"
    target.write_text("not a folder")
    check = run_cli("check", write_config(tmp_path / "c.yaml", make_config(output_dir=str(target))))
    assert check.returncode == 2 and f"output_dir: '{target}' is a file" in check.stderr

    config = validate_config(make_config(cache_latents=True, cache_latents_to_disk=True))
    monkeypatch.setattr(places.os, "access", lambda path, mode: not str(path).startswith(str(train_dir)))
    with pytest.raises(ConfigError) as refused:
        run_preflight(config, gpu=(False, False), machine=lambda *_: [])
    assert refused.value.problems[0].keys == ("cache_latents_to_disk",) and str(train_dir) in refused.value.message
    assert "cannot be written" in refused.value.message
    monkeypatch.undo()

    monkeypatch.setattr(places.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    with pytest.raises(ConfigError) as full:
        run_preflight(config, gpu=(False, False), machine=lambda *_: [])
    assert full.value.problems[0].keys == ("output_dir",) and "0 MB free" in full.value.message

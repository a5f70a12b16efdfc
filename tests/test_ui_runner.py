"""The GUI's process runner and run-folder reader, with real training processes (tiny SD1.5 model)."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import read_events, write_config

from trainer.common.errors import ConfigError
from trainer.config.io import load_config, validate_config
from trainer.config.migrations import CURRENT_VERSION, VERSION_KEY
from trainer.run import runner
from trainer.run.state import SMOOTHING, EventTail, RunReader, RunState, diagnose_exit, last_log_lines

LONG_RUN = {"max_train_steps": 100000}  # ends only when stopped or killed

pytestmark = pytest.mark.usefixtures("fresh_runner")


def wait_for(reader: RunReader, handle: runner.RunHandle, done, timeout: float = 240.0):
    """Poll like the page does until done(state); fail with the console log if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = handle.alive
        state = reader.update(alive, handle.exit_code)
        if done(state):
            return state
        if not alive:
            pytest.fail(f"the training ended ({state.status}):\n" + "\n".join(
                last_log_lines(handle.run_dir, 30, "console.log")))
        time.sleep(0.3)
    pytest.fail("timed out:\n" + "\n".join(last_log_lines(handle.run_dir, 30, "console.log")))


# --- reading the run folder ----------------------------------------------------------------------------

def test_event_tail_keeps_a_half_written_line(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # not created yet
    with open(path, "w", encoding="utf-8") as file:
        file.write('{"type": "plan", "total_steps": 4}\n{"type": "step", "st')
    assert [e["type"] for e in tail.read_new()] == ["plan"]
    assert tail.read_new() == []  # the half line is not returned, and not lost
    with open(path, "a", encoding="utf-8") as file:
        file.write('ep": 1, "loss": 0.5}\n{"type": "fini')
    assert tail.read_new() == [{"type": "step", "step": 1, "loss": 0.5}]
    with open(path, "a", encoding="utf-8") as file:  # a line cut by a killed writer, then a newer line
        file.write('\n{"type": "finished", "status": "stopped"}\n')
    assert tail.read_new() == [{"type": "finished", "status": "stopped"}]


def test_run_state_folds_events():
    state = RunState()
    assert state.status == "starting"
    losses = [0.5, 0.3, float("nan"), 0.4]
    state.apply([{"type": "plan", "total_steps": 8, "steps_per_epoch": 2, "epochs": 4}]
                + [{"type": "step", "step": i + 1, "epoch": i // 2 + 1, "loss": loss, "lr": 1e-3 * (i + 1),
                    "it_s": 2.0, "eta_s": 2.0} for i, loss in enumerate(losses)]
                + [{"type": "sample", "path": f"e{e}-s{s}-p{p}.png", "epoch": e, "step": s, "prompt": "x"}
                   for e, s in ((1, 2), (2, 3), (2, 4)) for p in (0, 1)]
                + [{"type": "checkpoint", "path": "a-000001.safetensors", "epoch": 1, "step": 2},
                   {"type": "health", "level": "warning", "code": "nan_loss", "message": "m", "hint": "h"},
                   {"type": "unknown"}])
    assert state.status == "running" and (state.step, state.epoch, state.total_steps) == (4, 2, 8)
    assert state.fraction == 0.5 and state.it_s == 2.0
    assert [s for s, _ in state.losses] == [1, 2, 3, 4]
    # TensorBoard's debiased EMA: the first point is the first loss, NaN is skipped
    expected_2 = (0.5 * (1 - SMOOTHING) * SMOOTHING + 0.3 * (1 - SMOOTHING)) / (1 - SMOOTHING ** 2)
    assert state.smoothed_losses[0] == (1, pytest.approx(0.5))
    assert state.smoothed_losses[1] == (2, pytest.approx(expected_2))
    assert [s for s, _ in state.smoothed_losses] == [1, 2, 4]
    assert state.lrs[-1] == (4, pytest.approx(4e-3))
    assert state.samples == [(2, ["e2-s4-p0.png", "e2-s4-p1.png", "e2-s3-p0.png", "e2-s3-p1.png"]),
                             (1, ["e1-s2-p0.png", "e1-s2-p1.png"])]
    assert state.checkpoints[0].epoch == 1 and state.banners[0].code == "nan_loss"
    state.apply([{"type": "error", "message": "boom", "hint": "fix"}, {"type": "finished", "status": "failed"}])
    assert state.status == "failed" and state.is_over and state.banners[-1].message == "boom"


def test_last_log_lines_reads_only_the_tail(tmp_path):
    (tmp_path / "train.log").write_text("".join(f"line {i}\n" for i in range(20000)), encoding="utf-8")
    assert last_log_lines(tmp_path, 3) == ["line 19997", "line 19998", "line 19999"]
    assert last_log_lines(tmp_path / "missing", 3) == []


def test_diagnose_exit(tmp_path):
    assert "out of memory" in diagnose_exit(tmp_path, -9).message
    assert "signal SIGSEGV" in diagnose_exit(tmp_path, -11).message
    (tmp_path / "console.log").write_text("error: train_data_dir: not found\nhint: pick a folder\n")
    assert (diagnose_exit(tmp_path, 2).message, diagnose_exit(tmp_path, 2).hint) == (
        "train_data_dir: not found", "pick a folder")
    (tmp_path / "console.log").write_text("Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory. Tried\n")
    diagnosis = diagnose_exit(tmp_path, 1)
    assert diagnosis.message == "the GPU ran out of memory" and "train_batch_size" in diagnosis.hint
    assert diagnosis.log_lines[-1].startswith("torch.OutOfMemoryError")


# --- running real trainings -----------------------------------------------------------------------------

def test_a_started_run_completes(tmp_path, make_config):
    config = make_config()
    handle = runner.start(load_config(write_config(tmp_path / "my.yaml", config)))
    out = Path(config["output_dir"]).resolve()
    assert handle.run_dir.parent == out / "runs" and handle.exit_code is None
    record = json.loads((handle.run_dir / "process.json").read_text())
    assert record["pid"] == handle.pid and record["argv"][-2:] == ["--run-dir", str(handle.run_dir)]
    written = yaml.safe_load((handle.run_dir / "config.yaml").read_text())
    assert written["network_dim"] == 4 and written[VERSION_KEY] == CURRENT_VERSION

    state = wait_for(RunReader(handle.run_dir), handle, lambda s: s.is_over)
    assert state.status == "completed" and handle.popen.wait(60) == 0 and handle.exit_code == 0
    assert [step for step, _ in state.losses] == [1, 2, 3, 4] and len(state.lrs) == 4
    assert Path(state.checkpoints[-1].path) == out / "test.safetensors"
    assert (out / "test.safetensors").is_file()
    assert "step 4/4" in "\n".join(last_log_lines(handle.run_dir, 10))
    assert runner.find_running([out]) is None  # finished runs are not reattached


@pytest.mark.parametrize("processes", [1, 2])
def test_refuse_reattach_and_stop(tmp_path, make_config, monkeypatch, processes):
    """With 2 processes the runner starts the launcher (trainer/run/launch.py): STOP reaches both processes."""
    config = make_config(**LONG_RUN, num_processes=processes)
    out = Path(config["output_dir"]).resolve()
    validated = validate_config({**config, "output_dir": "elsewhere"})
    handle = runner.start(validated, output_dir=out)  # output_dir replaces the config's
    wait_for(RunReader(handle.run_dir), handle, lambda s: s.step >= 1)

    with pytest.raises(runner.AlreadyRunning, match=str(handle.run_dir)):
        runner.start(validated, output_dir=out)
    # A reloaded page / restarted GUI: no handle in memory, the run is found from its folder.
    monkeypatch.setattr(runner, "_active", None)
    found = runner.find_running([tmp_path / "nothing here", out])
    assert found is not None and found is not handle and found.popen is None
    assert (found.run_dir, found.pid, found.alive) == (handle.run_dir, handle.pid, True)
    monkeypatch.setattr(runner, "_active", None)  # start itself looks in the output folder too
    with pytest.raises(runner.AlreadyRunning):
        runner.start(validated, output_dir=out)

    assert found.stop(timeout_s=120) == "stopped"
    assert not found.alive and found.exit_code is None  # a reattached handle cannot know the exit code
    state = RunReader(found.run_dir).update(alive=False)
    assert state.status == "stopped" and (out / "test.safetensors").is_file()
    assert read_events(found.run_dir)[-1]["status"] == "stopped"
    assert handle.popen.wait(30) == 0  # the reattached handle may see it end (command line gone) before its exit status is ready
    assert runner.find_running([out]) is None


def test_forced_stop_kills_the_process_group(tmp_path, make_config):
    handle = runner.start(validate_config(make_config(**LONG_RUN)))
    # Still importing torch, it does not look at STOP yet: the stop is forced after the timeout.
    assert handle.stop(timeout_s=0.2) == "forced"
    assert not handle.alive and handle.exit_code is not None
    assert "was killed" in last_log_lines(handle.run_dir, 1, "console.log")[0]
    state = RunReader(handle.run_dir).update(alive=False, exit_code=handle.exit_code)
    assert state.status == "stopped" and state.banners[-1].code == "forced_stop"


def test_a_killed_process_is_diagnosed_as_failed(tmp_path, make_config):
    handle = runner.start(validate_config(make_config(**LONG_RUN)))
    reader = RunReader(handle.run_dir)
    wait_for(reader, handle, lambda _: "total steps" in "\n".join(last_log_lines(handle.run_dir)))
    os.kill(handle.pid, signal.SIGKILL)
    handle.popen.wait(30)
    state = reader.update(handle.alive, handle.exit_code)
    assert handle.exit_code == -9 and state.status == "failed"
    assert state.banners[-1].message == "the training process was killed (out of memory?)"
    assert any(line.startswith("total steps") for line in state.log_tail)


def test_a_reused_pid_is_not_reattached(tmp_path):
    """process.json names a pid that is now another process (this pytest): not our training."""
    run_dir = tmp_path / "out" / "runs" / "20250101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "events.jsonl").write_text('{"type": "plan", "total_steps": 4}\n')
    for started_at in (time.time(), time.time() - 10**6):  # command line differs / process is younger
        (run_dir / "process.json").write_text(json.dumps({"pid": os.getpid(), "started_at": started_at}))
        assert runner.find_running([tmp_path / "out"]) is None
    assert runner.active() is None


def test_a_bad_config_starts_nothing(tmp_path, make_config):
    """The runner takes a validated config: a bad one is refused by the validation before it."""
    with pytest.raises(ConfigError, match="network_dimm"):
        runner.start(load_config(write_config(tmp_path / "my.yaml", make_config(network_dimm=4))))
    assert not (tmp_path / "out").exists()

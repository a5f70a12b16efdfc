"""Several processes on the CPU (gloo), started by `python -m trainer train` itself (trainer/run/launch.py): the
launch keys, DDP with parameters that take no gradient, and two "machines" on 127.0.0.1."""

import socket

import pytest
import safetensors
from conftest import read_events, run_cli, write_config

from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.run.launch import launch_argv, launch_problems


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sdxl_with_both_text_encoders_trained_in_two_processes(tmp_path, make_config, tiny_sdxl):
    """SDXL's first text encoder gives its penultimate layer: its last layer's LoRA takes no gradient."""
    path = write_config(tmp_path / "c.yaml", make_config(pretrained_model_name_or_path=str(tiny_sdxl),
                                                         num_processes=2, max_train_steps=2,
                                                         network_train_unet_only=False))
    result = run_cli("train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "run")
    assert events[-1] == {**events[-1], "type": "finished", "status": "completed"}
    with safetensors.safe_open(str(tmp_path / "out" / "test.safetensors"), "pt") as handle:
        prefixes = {key.split("_", 2)[0] + "_" + key.split("_", 2)[1] for key in handle.keys()}
    assert {"lora_te1", "lora_te2", "lora_unet"} <= prefixes


def test_two_machines_on_one_host_train_together(tmp_path, make_config):
    """num_machines 2: each "machine" runs the same command with its machine_rank; only rank 0 writes."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    port = free_port()
    commands = []
    for rank in (0, 1):
        config = make_config(num_processes=2, num_machines=2, machine_rank=rank, main_process_ip="127.0.0.1",
                             main_process_port=port, max_train_steps=2)
        path = write_config(tmp_path / f"machine{rank}.yaml", config)
        commands.append(subprocess.Popen([sys.executable, "-m", "trainer", "train", str(path), "--run-dir",
                                          str(tmp_path / f"run{rank}")], cwd=REPO, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}))
    outputs = [process.communicate(timeout=300)[0] for process in commands]
    assert [process.returncode for process in commands] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    events = read_events(tmp_path / "run0")
    assert events[0]["num_processes"] == 2 and events[-1]["status"] == "completed"
    assert not (tmp_path / "run1" / "events.jsonl").exists()  # the second machine writes nothing


@pytest.mark.parametrize(("settings", "key", "text"), [
    ({"machine_rank": 2, "num_machines": 2, "main_process_ip": "10.0.0.1", "num_processes": 2}, "machine_rank",
     "number the machines"),
    ({"num_machines": 2, "num_processes": 2}, "main_process_ip", "set main_process_ip"),
    ({"num_processes": 3, "num_machines": 2, "main_process_ip": "10.0.0.1"}, "num_processes", "multiple of"),
    ({"num_processes": 2, "gpu_ids": "0"}, "gpu_ids", "one GPU per process"),
    ({"gpu_ids": "0,x"}, "gpu_ids", "GPU numbers"),
])
def test_launch_keys_are_checked(make_config, settings, key, text):
    with pytest.raises(ConfigError) as caught:
        validate_config(make_config(**settings))
    [problem] = caught.value.problems
    assert problem.keys[0] == key and text in str(problem)


def test_this_machine_is_checked_for_its_gpus_and_port(make_config):
    config = validate_config(make_config(num_processes=4, gpu_ids="0,1,5,6"))
    [missing] = launch_problems(config, gpus=2)
    assert missing.keys == ("gpu_ids",) and "no GPU 5, 6" in str(missing)
    [too_many] = launch_problems(validate_config(make_config(num_processes=4)), gpus=2)
    assert too_many.keys == ("num_processes",) and "at most 2" in str(too_many)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        taken = validate_config(make_config(num_processes=2, main_process_port=busy.getsockname()[1]))
        [port] = launch_problems(taken, gpus=0)
    assert port.keys == ("main_process_port",) and "in use" in str(port)
    argv = launch_argv(validate_config(make_config(num_processes=4, num_machines=2, machine_rank=1,
                                                   main_process_ip="10.0.0.1")), "c.yaml", "run", 29500)
    assert argv[1:8] == ["-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=2", "--node_rank=1",
                         "--master_addr=10.0.0.1", "--master_port=29500"]


def test_the_gui_shows_what_train_will_start(make_config, monkeypatch):
    from ui import live
    from ui.review import review

    class Worker:  # the GUI asks its worker process which GPUs there are
        def gpu_list(self):
            return [{"index": index, "name": "RTX 4090", "gib": 24.0} for index in range(3)]

        def gpu_memory_gib(self):
            return 24.0

    monkeypatch.setattr(live, "worker", Worker)
    shown = live.plan_markdown(review({**make_config(), "num_processes": 2, "gpu_ids": "1,2"}), "en")
    assert "GPUs found: 0: RTX 4090 (24 GiB)" in shown and "2 training processes on this machine, GPUs 1, 2" in shown
    assert "--nproc_per_node=2" in shown
    assert "进程与显卡" in live.plan_markdown(review({**make_config(), "num_processes": 2}), "zh")


def test_kohya_ss_and_sd_scripts_launch_settings_import(tmp_path):
    import json

    from trainer.presets.importers import import_file

    kohya = tmp_path / "kohya.json"
    kohya.write_text(json.dumps({"LoRA_type": "Standard", "num_processes": 2, "gpu_ids": "0,1", "num_machines": 1,
                                 "main_process_port": 0, "multi_gpu": True}), encoding="utf-8")
    settings = import_file(kohya).settings
    assert (settings["num_processes"], settings["gpu_ids"]) == (2, "0,1") and "multi_gpu" not in settings
    assert "main_process_port" not in settings or settings["main_process_port"] is None  # 0: kohya_ss leaves it out
    toml = tmp_path / "config.toml"
    toml.write_text('ddp_timeout = 60\nddp_static_graph = true\ndeepspeed = true\n', encoding="utf-8")
    result = import_file(toml)
    assert (result.settings["ddp_timeout"], result.settings["ddp_static_graph"]) == (60, True)
    assert "deepspeed" not in result.settings

"""Several training processes: `python -m trainer train` with num_processes > 1 starts them through torch's
launcher (torchrun: `python -m torch.distributed.run`), one per GPU on this machine, as an argument list (no
shell), and waits. The processes read the config this one resolved (run_dir/launch.yaml), share its run folder,
and let accelerate set up the process group from the launcher's environment; only the main one writes (events,
samples, files). On several machines each runs the same command with its own machine_rank (docs/training.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from trainer.common.errors import Problem, UserError
from trainer.config import TrainConfig
from trainer.config.io import config_to_yaml
from trainer.run.child import child_env

LAUNCHED_ENV = "DANLU_LAUNCHED"  # set for the launched processes: the launcher holds the output lock for them
LAUNCH_CONFIG = "launch.yaml"
DEFAULT_PORT = 29500  # torchrun's, for several machines when main_process_port is empty


def launched() -> bool:
    """This process is one of those a launcher started (torchrun sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def launch_argv(config: TrainConfig, config_file: Path, run_dir: Path, port: int | str) -> list[str]:
    """The launcher's command line: torchrun with this machine's share of the processes."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={config.processes_per_machine}",
            f"--nnodes={config.num_machines}", f"--node_rank={config.machine_rank}",
            f"--master_addr={config.main_process_ip or '127.0.0.1'}", f"--master_port={port}",
            "-m", "trainer", "train", str(config_file), "--run-dir", str(run_dir)]


def launch_env(config: TrainConfig) -> dict[str, str]:
    env = {**child_env(), LAUNCHED_ENV: "1"}
    if config.gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = config.gpu_ids
    return env


def launch(config: TrainConfig, run_dir: Path) -> int:
    """Start this machine's processes and wait for them; their exit status (the first failing one's)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / LAUNCH_CONFIG
    config_file.write_text(config_to_yaml(config), encoding="utf-8")
    argv = launch_argv(config, config_file, run_dir, main_port(config))
    print(f"starting {config.processes_per_machine} training processes on this machine "
          f"({config.num_processes} in all): {' '.join(argv[1:])}", flush=True)
    try:
        return subprocess.run(argv, env=launch_env(config), stdin=subprocess.DEVNULL, check=False).returncode
    except OSError as exc:
        raise UserError(f"num_processes: cannot start the launcher: {exc}",
                        "check that PyTorch is installed in this Python environment",
                        zh=f"num_processes：无法启动多进程启动器：{exc}",
                        hint_zh="请确认这个 Python 环境里装了 PyTorch") from None


def main_port(config: TrainConfig) -> int:
    """main_process_port; else 29500 for several machines (they must agree), a free port on one machine."""
    if config.main_process_port:
        return config.main_process_port
    if config.num_machines > 1:
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something on this machine already listens on `port` (the main machine's check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def launch_problems(config: TrainConfig, gpus: int) -> list[Problem]:
    """What this machine cannot launch: GPU ids it does not have, more processes than GPUs, a port in use.
    gpus: CUDA devices here (0: processes on the CPU, as the tests run them)."""
    problems = []
    ids = [int(part) for part in config.gpu_ids.split(",")] if config.gpu_ids else []
    missing = [number for number in ids if number >= gpus]
    if gpus and missing:
        problems.append(Problem(("gpu_ids",), f"this machine has no GPU {', '.join(map(str, missing))} (it has "
                                f"{gpus}: 0-{gpus - 1})", "use the numbers nvidia-smi shows",
                                zh=f"这台机器没有 {', '.join(map(str, missing))} 号显卡"
                                f"（它有 {gpus} 张：0-{gpus - 1}）",
                                hint_zh="请使用 nvidia-smi 显示的编号"))
    if gpus and not ids and config.processes_per_machine > gpus:
        problems.append(Problem(("num_processes",), f"{config.processes_per_machine} processes on this machine, "
                                f"but it has {gpus} GPU{'s' if gpus > 1 else ''}",
                                f"set num_processes to at most {gpus * config.num_machines}",
                                zh=f"本机要开 {config.processes_per_machine} 个进程，但只有 {gpus} 张显卡",
                                hint_zh=f"请把 num_processes 设为不超过 {gpus * config.num_machines}"))
    if config.distributed and config.main_process_port and config.machine_rank == 0 and not launched() and \
            port_in_use(config.main_process_port):  # once launched, the processes themselves listen there
        problems.append(Problem(("main_process_port",), f"port {config.main_process_port} is in use on this "
                                "machine", "pick another port, or leave it empty on a single machine",
                                zh=f"本机的端口 {config.main_process_port} 已被占用",
                                hint_zh="请换一个端口；单机训练可以留空"))
    return problems


def describe_launch(config: TrainConfig, gpus: list[dict], lang: str = "en") -> str:
    """What `train` will start on this machine, for the GUI: the processes, their GPUs and the command."""
    zh = lang.startswith("zh")
    named = {gpu["index"]: gpu for gpu in gpus}
    chosen = [int(part) for part in config.gpu_ids.split(",")] if config.gpu_ids else list(named)
    chosen = chosen[:config.processes_per_machine]
    found = ", ".join(f"{gpu['index']}: {gpu['name']} ({gpu['gib']:g} GiB)" for gpu in gpus)
    lines = [(f"找到的显卡：{found}" if zh else f"GPUs found: {found}") if gpus else
             ("未找到显卡：进程在 CPU 上运行（gloo，仅用于测试）" if zh else
              "no GPU found: the processes run on the CPU (gloo, for testing)")]
    ids = ", ".join(map(str, chosen))
    where = (f"显卡 {ids}" if zh else f"GPU{'s' if len(chosen) > 1 else ''} {ids}") if gpus else "CPU"
    count = config.processes_per_machine
    lines.append(f"本机 {count} 个训练进程，{where}" if zh else
                 f"{count} training process{'es' if count > 1 else ''} on this machine, {where}")
    if config.distributed:
        port = config.main_process_port or (DEFAULT_PORT if config.num_machines > 1 else "FREE")
        command = launch_argv(config, Path("RUN") / LAUNCH_CONFIG, Path("RUN"), port)
        lines.append(("命令：" if zh else "command: ") + " ".join(["python", *command[1:]]))
    return "\n".join(lines)

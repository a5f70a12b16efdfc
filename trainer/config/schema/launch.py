"""Run tab: how many processes train, on which GPUs and machines (accelerate's launch options, as kohya_ss and
lora-scripts name them). Values of this computer: a shared preset leaves them out; none reaches the LoRA's
metadata."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field


def _launch(default, help: str, help_zh: str, **constraints):
    return field(default, "run", "launch", help, help_zh, metadata=False, machine=True, **constraints)


class LaunchFields(SchemaPart):
    num_processes: int = _launch(
        1, "Training processes in all, one per GPU (accelerate's --num_processes): 2 on two GPUs trains each step on "
        "twice the images, half on each card. Across several machines it counts every machine's processes.",
        "训练进程总数，每张显卡一个（即 accelerate 的 --num_processes）：两张卡设为 2，每步的图片由两张卡各算一半。"
        "多台机器时是所有机器的进程之和。", ge=1, le=256)
    gpu_ids: str | None = _launch(
        None, "The GPUs to train on, e.g. 0,1 (nvidia-smi's numbers); empty: the first num_processes GPUs.",
        "参与训练的显卡编号，如 0,1（nvidia-smi 中的编号）；留空则用前 num_processes 张卡。")
    num_machines: int = _launch(
        1, "Machines training together; each runs `python -m trainer train` with the same config and its own "
        "machine_rank.", "一起训练的机器数；每台机器用同一份配置运行 `python -m trainer train`，"
        "machine_rank 各不相同。",
        ge=1, le=64)
    machine_rank: int = _launch(
        0, "This machine's number among num_machines: 0 on the main machine, 1, 2, ... on the others.",
        "本机在多台机器中的编号：主机为 0，其余依次为 1、2……", ge=0)
    main_process_ip: str | None = _launch(
        None, "Address of the machine with machine_rank 0, which every machine connects to (several machines).",
        "machine_rank 为 0 的主机地址，其他机器都连到它（多台机器时需要）。")
    main_process_port: int | None = _launch(
        None, "Port on the main machine for the processes to meet; empty: 29500, or a free one on a single machine.",
        "进程之间在主机上会合的端口；留空：多机为 29500，单机自动选一个空闲端口。", ge=1024, le=65535)
    ddp_timeout: int | None = _launch(
        None, "Minutes a process waits for the others before giving up (sd-scripts' option; empty: 30). Raise it "
        "when one machine caches a large dataset while the others wait.",
        "进程等待其他进程的最长分钟数（sd-scripts 的同名选项；留空为 30）。"
        "某台机器缓存大数据集、其他机器等待时可调大。",
        ge=1)
    ddp_gradient_as_bucket_view: bool = _launch(
        False, "DDP keeps gradients inside its communication buffers: a little less memory (sd-scripts' option).",
        "DDP 把梯度直接放在通信缓冲区中：略省显存（sd-scripts 的同名选项）。")
    ddp_static_graph: bool = _launch(
        False, "Tell DDP the model uses the same parameters every step: a little faster (sd-scripts' option).",
        "告诉 DDP 每步使用的参数都相同：略快一些（sd-scripts 的同名选项）。")

    @field_validator("gpu_ids", mode="before")
    @classmethod
    def _gpu_list(cls, value):
        if isinstance(value, (list, tuple)):  # lora-scripts writes a list: ['0', '1']
            value = ",".join(map(str, value))
        if value is None or str(value).strip() in ("", "all"):
            return None
        ids = [part.strip() for part in str(value).split(",") if part.strip()]
        if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
            raise RuleError("must be GPU numbers separated by commas, each once, e.g. 0,1",
                            zh="应为用英文逗号分隔的显卡编号，每个只写一次，例如 0,1")
        return ",".join(ids)

    @model_validator(mode="after")
    def _launch_rules(self):
        if self.machine_rank >= self.num_machines:
            raise RuleError(f"machine_rank {self.machine_rank} is not below num_machines ({self.num_machines}): "
                            "number the machines 0, 1, ...", "machine_rank", "num_machines",
                            zh=f"machine_rank {self.machine_rank} 不小于 num_machines（{self.num_machines}）："
                            "机器请从 0 开始编号：0、1……")
        if self.num_processes % self.num_machines:
            raise RuleError(f"num_processes ({self.num_processes}) counts every machine's processes: make it a "
                            f"multiple of num_machines ({self.num_machines})", "num_processes", "num_machines",
                            zh=f"num_processes（{self.num_processes}）是所有机器的进程总数：应为 num_machines"
                            f"（{self.num_machines}）的整数倍")
        if self.num_machines > 1 and not self.main_process_ip:
            raise RuleError("several machines meet at the main machine: set main_process_ip to its address",
                            "main_process_ip", "num_machines",
                            zh="多台机器要在主机器上会合：请把 main_process_ip 设为主机器的地址")
        if self.gpu_ids and len(self.gpu_ids.split(",")) < self.processes_per_machine:
            raise RuleError(f"gpu_ids names {len(self.gpu_ids.split(','))} GPUs for {self.processes_per_machine} "
                            "processes on this machine: name one GPU per process", "gpu_ids", "num_processes",
                            zh=f"gpu_ids 只写了 {len(self.gpu_ids.split(','))} 张显卡，而本机有 "
                            f"{self.processes_per_machine} 个进程：每个进程需要一张显卡")
        return self

    @property
    def processes_per_machine(self) -> int:
        return self.num_processes // self.num_machines

    @property
    def distributed(self) -> bool:
        """More than one process trains: `train` starts them through torch's launcher."""
        return self.num_processes > 1

"""Training speed and memory of the trainer on the tiny SD1.5 model, one subprocess per setting.

    .venv/bin/python bench/train_speed.py [--steps N] [--out docs/benchmarks.md]

Each setting trains for real through trainer.training.loop.train in a fresh Python process (so the peak RSS is that
setting's own) and reports steady-state it/s, the time to the first step and peak memory. With CUDA the runs
use bf16 mixed precision and also report torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["HF_HUB_OFFLINE"] = "1"

WARMUP_STEPS = 5  # the first steps pay for lazy inits and allocator growth: left out of it/s
THREADS = "OMP_NUM_THREADS"  # a setting key that goes to the child's environment, not to its config

# name -> overrides of the base config (tests/conftest.py make_config's fast settings)
SETTINGS: dict[str, dict] = {
    "baseline (cache_latents, batch 2)": {},
    "cache_latents off, 0 workers": {"cache_latents": False},
    "cache_latents off, 2 workers": {"cache_latents": False, "max_data_loader_n_workers": 2},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "train_batch_size 4": {"train_batch_size": 4},
    "network_train_unet_only": {"network_train_unet_only": True},
    "min_snr_gamma 5 + noise_offset 0.05": {"min_snr_gamma": 5, "noise_offset": 0.05},
    "optimizer AdamW8bit": {"optimizer_type": "AdamW8bit"},
    "torch threads 1 (OMP_NUM_THREADS=1)": {THREADS: 1},
}


def base_config(model: Path, data: Path, out: Path, steps: int, cuda: bool) -> dict:
    return {
        "pretrained_model_name_or_path": str(model), "train_data_dir": str(data), "output_dir": str(out),
        "output_name": "bench", "resolution": "64", "bucket_reso_steps": 16, "min_bucket_reso": 64,
        "max_bucket_reso": 128, "train_batch_size": 2, "max_train_epochs": None, "max_train_steps": steps,
        "network_dim": 4, "network_alpha": 2, "learning_rate": 1e-3, "cache_latents": True,
        "mixed_precision": "bf16" if cuda else "no", "save_precision": "float", "max_data_loader_n_workers": 0,
        "seed": 7,
    }


def run_one(spec: dict) -> dict:
    """In the child process: train one config, then measure from its events.jsonl and the process counters."""
    import torch

    from trainer.config.io import validate_config
    from trainer.training.loop import train

    run_dir = Path(spec["run_dir"])
    started = time.time()
    train(validate_config(spec["config"]), run_dir)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    times = [e["t"] for e in events if e["type"] == "step"]
    steady = times[WARMUP_STEPS:]
    result = {
        "it_s": (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else None,
        "first_step_s": times[0] - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    if torch.cuda.is_available():
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def spawn(name: str, config: dict, run_dir: Path) -> dict:
    """Run one setting in a child process; a failure becomes a note instead of stopping the benchmark."""
    env = {**os.environ, **({THREADS: str(config.pop(THREADS))} if THREADS in config else {})}
    spec = json.dumps({"config": config, "run_dir": str(run_dir)})
    proc = subprocess.run([sys.executable, __file__, "--one", spec], check=False, capture_output=True, text=True,
                          cwd=REPO, env=env)
    lines = proc.stdout.splitlines()
    if proc.returncode == 0 and lines and lines[-1].startswith("RESULT "):
        return json.loads(lines[-1][len("RESULT "):])
    # A traceback's last line is on stderr; a killed child leaves nothing there but its exit status.
    error = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), f"exit {proc.returncode}")
    print(f"  {name}: failed: {error}", file=sys.stderr)
    return {"note": f"skipped: {error.strip()[:160]}"}


def run_matrix(steps: int, cuda: bool) -> dict[str, dict]:
    from trainer.demo.data import build_demo_dataset
    from trainer.families.tiny_sd import build_tiny_sd

    results = {}
    with tempfile.TemporaryDirectory(prefix="danlu-bench-") as tmp:
        root = Path(tmp)
        model, data = build_tiny_sd(root / "model", "sd1"), build_demo_dataset(root / "data")
        for index, (name, overrides) in enumerate(SETTINGS.items()):
            config = {**base_config(model, data, root / f"out{index}", steps, cuda), **overrides}
            print(f"running: {name}", file=sys.stderr)
            results[name] = spawn(name, config, root / f"run{index}")
    return results


def table(results: dict[str, dict], cuda: bool) -> str:
    def fmt(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    head = ["setting", "it/s", "samples/s", "first step (s)", "peak RSS (MiB)"] + (["CUDA peak (MiB)"] if cuda else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        if "note" in r:
            rows.append(f"| {name} | {r['note']} |" + " |" * (len(head) - 2))
            continue
        batch = SETTINGS[name].get("train_batch_size", 2)
        cells = [name, fmt(r["it_s"], 2), fmt(r["it_s"] and r["it_s"] * batch, 1), fmt(r["first_step_s"], 1),
                 fmt(r["peak_rss_mib"], 0)] + ([fmt(r.get("cuda_peak_mib"), 0)] if cuda else [])
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def machine(cuda: bool) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, device: {device}")


def document(results: dict[str, dict], cuda: bool, command: str, loads: tuple[float, float]) -> str:
    return f"""# Training speed and memory

Measured with `bench/train_speed.py` on {datetime.date.today().isoformat()}.

- Command: `{command}`
- Machine: {machine(cuda)}
- Load average (1 min) before / after the run: {loads[0]:.2f} / {loads[1]:.2f}

{table(results, cuda)}

What the figures mean: each setting trains the tiny random SD1.5 model (trainer.families.tiny_sd) on the demo
dataset (42 images with repeats, resolution 64, buckets 64-128, LoRA dim 4) in its own process.
They show the relative cost of the options and the overhead of the training loop, not the speed of a real
SD1.5 model, where the UNet's compute dominates and the options weigh differently (gradient checkpointing,
for one, recomputes activations in the backward pass and saves far more memory on a real model than here).

- it/s: optimizer steps per second, from the `step` events in events.jsonl, the first {WARMUP_STEPS} steps left
  out. samples/s = it/s x train_batch_size.
- first step: seconds from calling train() to the first step event: model load, LoRA injection, latent caching
  (when on) and the first step itself; Python and torch import time is not included.
- peak RSS: the process's peak resident memory (resource.getrusage), which includes torch itself (several
  hundred MiB); compare the differences between rows. CUDA peak: torch.cuda.max_memory_allocated (GPU runs only,
  with bf16 mixed precision).
- Noise: two runs on the same quiet machine differed by up to about 20% per row, so only larger differences
  between rows mean something.
- Load: the benchmark itself adds about its thread count to the load average (so "after" is high even on an
  idle machine); a load near the core count *before* the run means other work shared the CPU. Oversubscribed
  torch threads slow down far more than their share suggests: with a test suite running beside it, the
  baseline's steps here took 9-11 s instead of 0.06 s (0.09 it/s), while the same run with OMP_NUM_THREADS=1
  kept 20 it/s. Figures taken under load are void.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per setting")
    parser.add_argument("--out", type=Path, help="write the figures as markdown here (e.g. docs/benchmarks.md)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting (JSON spec) in this process
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))))
        return
    import torch

    cuda = torch.cuda.is_available()
    load_before = os.getloadavg()[0]
    results = run_matrix(args.steps, cuda)
    print(table(results, cuda))
    if args.out:
        python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else "python"
        command = " ".join([python, "bench/train_speed.py", *sys.argv[1:]])
        args.out.write_text(document(results, cuda, command, (load_before, os.getloadavg()[0])), encoding="utf-8")
        print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The reference row of bench/gpu_speed.sh: kohya sd-scripts' sdxl_train_network.py on the same GPU, the same
random full-size SDXL weights and the same settings as Danlu's rows, timed the same way.

    python bench/sd_scripts_speed.py --sd-scripts DIR --out OUT --label NAME [--batch 1] [--rank 32]
        [--resolution 1024] [--checkpointing] [--steps 30] [--first-step 5] [--site DIR ...]

The random SDXL model (bench/gpu_memory.py's builder: the shipped configs, random weights on the GPU) is written
once as one original-layout .safetensors file (trainer.families.original_layout, as A1111 and sd-scripts read
it), then sd-scripts trains LoRA on a few synthetic images: cached latents and text-encoder outputs, UNet only,
AdamW, bf16, SDPA. sd-scripts runs inside a child process of this script (runpy), so that the peak GPU memory is
its own; s/it is the median duration of steps --first-step and later, from its TensorBoard loss points.

sd-scripts pins its packages (transformers 4.54, diffusers 0.32, ...) and does not run with transformers 5
(`CLIPFeatureExtractor` is gone), which Danlu uses: --site puts folders with its pinned packages (installed there
with `pip install --target`) ahead of the machine's in the child, as sd-scripts' own install would have them. It
also needs opencv-python-headless, toml, voluptuous, imagesize, einops, ftfy and torchvision.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import gpu_memory  # this folder's bench: the random weights, the images, the steady s/it

WEIGHTS, TOKENIZERS = "random_sdxl.safetensors", "tokenizers"
# sd-scripts loads SDXL's two tokenizers from the hub by these names, or offline from --tokenizer_cache_dir/<name>
SD_SCRIPTS_TOKENIZERS = {"tokenizer": "openai_clip-vit-large-patch14",
                         "tokenizer_2": "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd-scripts", type=Path, required=True, help="a checkout of kohya-ss/sd-scripts")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--first-step", type=int, default=gpu_memory.FIRST_TIMED_STEP,
                        help="s/it is the median duration of this step and the later ones")
    parser.add_argument("--site", action="append", default=[], type=Path,
                        help="a folder of sd-scripts' pinned packages, ahead of the machine's; repeatable")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return run_sd_scripts(args.sd_scripts, args.child)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / WEIGHTS
    if not (weights.is_file() and (args.out / TOKENIZERS).is_dir()):
        write_random_sdxl(args.out)
    work = args.out / args.label.replace(" ", "_")
    gpu_memory.write_images(work / "data" / "1_bench", (args.resolution, args.resolution), gpu_memory.IMAGES)
    command = [sys.executable, __file__, "--sd-scripts", str(args.sd_scripts), "--out", str(args.out), "--label",
               args.label, "--child", *sd_scripts_args(args, weights, work)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=child_env(args.site))
    (work / "sd-scripts.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    peak = next((json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")), {})
    result = {"preset": f"{args.label} (sd-scripts)", "status": "completed" if done.returncode == 0 else
              f"failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}", **peak,
              "s_per_it": median_step_time(work / "logs", args.first_step)}
    (args.out / f"{args.label.replace(' ', '_')}.json").write_text(json.dumps(result), encoding="utf-8")
    print(json.dumps(result))
    return 0 if done.returncode == 0 else 1


def write_random_sdxl(out: Path) -> None:
    """The random full-size SDXL as one original-layout file (UNet, VAE, both CLIPs), written from the GPU, and its
    tokenizers where sd-scripts looks for them offline."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from trainer.families.loading import ModelSources, load_components
    from trainer.families.original_layout import original_file
    from trainer.families.tiny_sd import write_clip_bpe_files

    gpu_memory.use_random_weights("cuda" if torch.cuda.is_available() else "cpu")
    folder = gpu_memory.model_folder("sdxl", Path(tempfile.mkdtemp(prefix="danlu-sdxl-")), tiny=False)
    components = load_components(ModelSources(str(folder)), "sdxl", torch.bfloat16)
    tensors = {name: tensor.contiguous() for name, tensor in original_file("sdxl", components).items()}
    save_file(tensors, str(out / WEIGHTS))
    for subfolder, name in SD_SCRIPTS_TOKENIZERS.items():  # vocab.json and merges.txt, as transformers 4 reads them
        shutil.copy(folder / subfolder / "tokenizer_config.json", write_clip_bpe_files(out / TOKENIZERS / name))


def sd_scripts_args(args: argparse.Namespace, weights: Path, work: Path) -> list[str]:
    """sd-scripts' command line with Danlu's row settings (bench/gpu_speed.sh)."""
    return ["--pretrained_model_name_or_path", str(weights), "--train_data_dir", str(work / "data"),
            "--output_dir", str(work / "out"), "--output_name", "bench", "--logging_dir", str(work / "logs"),
            "--log_with", "tensorboard", "--resolution", f"{args.resolution},{args.resolution}",
            "--train_batch_size", str(args.batch), "--max_train_steps", str(args.steps),
            "--network_module", "networks.lora", "--network_dim", str(args.rank), "--network_alpha", str(args.rank),
            "--network_train_unet_only", "--learning_rate", "1e-4", "--optimizer_type", "AdamW",
            "--mixed_precision", "bf16", "--save_precision", "bf16", "--cache_latents",
            "--cache_text_encoder_outputs", "--sdpa", "--caption_extension", ".txt", "--seed", "42",
            "--tokenizer_cache_dir", str(weights.parent / TOKENIZERS),
            "--max_data_loader_n_workers", "0", *(["--gradient_checkpointing"] if args.checkpointing else [])]


def child_env(sites: list[Path]) -> dict[str, str]:
    """The environment of sd-scripts' process: its pinned packages first on the path."""
    paths = [str(site.resolve()) for site in sites] + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}


def run_sd_scripts(folder: Path, argv: list[str]) -> int:
    """In the child: sdxl_train_network.py as its own __main__, then this process's peak GPU memory."""
    import torch

    sys.path.insert(0, str(folder))
    sys.argv = [str(folder / "sdxl_train_network.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")
    if torch.cuda.is_available():
        print("RESULT " + json.dumps({"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                                      "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}))
    return 0


def median_step_time(logs: Path, first_step: int) -> float | None:
    """The steady s/it (gpu_memory.steady_s_per_it) from sd-scripts' per-step TensorBoard loss points."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: list[float] = []
    for events in sorted(logs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        tags = [tag for tag in accumulator.Tags()["scalars"] if tag.startswith("loss/current")]
        times += [event.wall_time for tag in tags[:1] for event in accumulator.Scalars(tag)]
    return gpu_memory.steady_s_per_it(times, first_step)


if __name__ == "__main__":
    sys.exit(main())

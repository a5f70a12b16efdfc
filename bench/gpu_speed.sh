#!/usr/bin/env bash
# Danlu against kohya sd-scripts on one GPU (issue 15): SDXL LoRA rank 32 at 1024 px, bf16, cached latents and
# text-encoder outputs, batch 1 and 4, gradient checkpointing on and off; Flux.1-dev LoRA rank 16 at 1024 px with
# fp8 base weights. Random full-size weights (bench/gpu_memory.py); s/it is the median duration of steps 10 to
# STEPS, MFU counts twice the denoiser's forward FLOPs per image batch (bench/gpu_memory.py's docstring).
#
#   bench/gpu_speed.sh OUT SD_SCRIPTS_DIR [STEPS]    # on the GPU machine; SD_SCRIPTS_DIR: a kohya-ss/sd-scripts checkout
#   bench/gpu_speed.sh OUT --dry                     # Danlu's rows on the tiny models on the CPU, no reference
#
# SD_SCRIPTS_SITE: folders (separated by ':') of sd-scripts' pinned packages, put ahead of the machine's for the
# reference only (bench/sd_scripts_speed.py --site: sd-scripts does not run with transformers 5).
#
# PARTS: "danlu", "reference" or both (the default); two calls with one part each, the same OUT, fit a device's
# 10-minute limit per command. OUT/results.md gets one table of every row in OUT (docs/benchmarks-gpu.md records it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:?usage: bench/gpu_speed.sh OUT SD_SCRIPTS_DIR|--dry [STEPS]}
REFERENCE=${2:?usage: bench/gpu_speed.sh OUT SD_SCRIPTS_DIR|--dry [STEPS]}
STEPS=${3:-30}
PYTHON=${PYTHON:-python}
DRY=()
FIRST=10
if [[ "$REFERENCE" == "--dry" ]]; then DRY=(--tiny); STEPS=${3:-6}; FIRST=3; fi
PARTS=${PARTS:-danlu reference}
SITES=()
IFS=: read -r -a site_dirs <<< "${SD_SCRIPTS_SITE:-}"
for dir in "${site_dirs[@]}"; do [[ -n "$dir" ]] && SITES+=(--site "$dir"); done
SDXL=(--presets sdxl-character-24gb --set resolution=1024 --set network_dim=32 --set network_alpha=32
      --set mixed_precision=bf16 --set cache_text_encoder_outputs=true --set network_train_unet_only=true
      --set optimizer_type=AdamW --set learning_rate=1e-4 --set caption_dropout_rate=0)
FLUX=(--presets flux-dev-24gb --set resolution=1024 --set network_dim=16 --set network_alpha=16 --set fp8_base=true)
mkdir -p "$OUT"

danlu() {  # LABEL ARGS...: one Danlu row
    [[ " $PARTS " == *" danlu "* ]] || return 0
    local label=$1; shift
    "$PYTHON" bench/gpu_memory.py --out "$OUT/$label" --label "$label" --no-cap --steps "$STEPS" \
        --first-step "$FIRST" --timeout 540 \
        "${DRY[@]}" "$@" || true
}
reference() {  # LABEL ARGS...: the same settings through sd-scripts
    [[ ${#DRY[@]} -eq 0 && " $PARTS " == *" reference "* ]] || return 0
    "$PYTHON" bench/sd_scripts_speed.py --sd-scripts "$REFERENCE" --out "$OUT/reference" --steps "$STEPS" \
        --first-step "$FIRST" "${SITES[@]}" --label "$@" || true
}

for batch in 1 4; do
    for checkpointing in true false; do
        label="sdxl b$batch ckpt $checkpointing"
        danlu "$label" "${SDXL[@]}" --set train_batch_size=$batch --set gradient_checkpointing=$checkpointing
        reference "$label" --batch $batch $([[ $checkpointing == true ]] && echo --checkpointing)
    done
done
danlu "flux fp8 r16" "${FLUX[@]}"

"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "bench")
from gpu_memory import table
out = Path(sys.argv[1])
rows = [row for path in sorted(out.glob("*/results.json")) for row in json.loads(path.read_text())]
danlu = {row["preset"]: row for row in rows}
for path in sorted((out / "reference").glob("*.json")):
    row = json.loads(path.read_text())
    ours = danlu.get(row["preset"].removesuffix(" (sd-scripts)"), {})
    if ours.get("mfu") and row.get("s_per_it"):  # the same model and shapes: the same FLOPs per step
        row["mfu"] = round(ours["mfu"] * ours["s_per_it"] / row["s_per_it"], 3)
    rows.append(row)
(out / "results.md").write_text(table(rows), encoding="utf-8")
print(table(rows))
PY

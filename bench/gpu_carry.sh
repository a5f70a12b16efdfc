#!/usr/bin/env bash
# What bench/gpu_speed.sh needs on the device machine and that machine lacks, gathered here in ignored folders
# for the device tool's `carry` (docs/benchmarks-gpu.md, "Speed against kohya sd-scripts", has the two calls):
#   .whl/danlu       diffusers and pydantic (with their needs the machine lacks) for Danlu's code
#   .whl/bnb         bitsandbytes for Danlu's Flux row (the preset's AdamW8bit)
#   .whl/sd-scripts  sd-scripts' pinned packages (transformers 4.54, diffusers 0.32, ...) and its small needs
#   .sd-scripts      the sd-scripts source, from a snapshot (the search tool's fetch), without its Windows DLLs,
#                    docs, tests and other models' configs
#
#   bench/gpu_carry.sh SD_SCRIPTS_GIT_DIR      # e.g. /work/.mirror/kohya-ss+sd-scripts/repo
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SNAPSHOT=${1:?usage: bench/gpu_carry.sh SD_SCRIPTS_GIT_DIR}
PYTHON=${PYTHON:-python3}
# The device machine: Python 3.12 on x86-64 Linux (/work/.library/device/README.md)
DOWNLOAD=(-m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64)

for ignored in /.whl/ /.sd-scripts/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
rm -rf .whl/danlu .whl/bnb .whl/sd-scripts .sd-scripts
"$PYTHON" "${DOWNLOAD[@]}" -d .whl/danlu diffusers==0.42.1 importlib_metadata==8.7.0 pydantic==2.14.4 \
    pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
"$PYTHON" "${DOWNLOAD[@]}" -d .whl/bnb bitsandbytes==0.50.2
"$PYTHON" "${DOWNLOAD[@]}" -d .whl/sd-scripts transformers==4.54.1 tokenizers==0.21.4 huggingface_hub==0.34.3 \
    diffusers==0.32.1 accelerate==1.6.0 toml==0.10.2 voluptuous==0.15.2 imagesize==1.4.1 ftfy==6.3.1 wcwidth==0.2.13

mkdir -p .sd-scripts
commit=$(git -C "$SNAPSHOT" rev-parse HEAD)
git -C "$SNAPSHOT" ls-tree -r --name-only HEAD | grep -v -E '^(bitsandbytes_windows|configs|docs|tests|images)/' | while read -r file; do
    mkdir -p ".sd-scripts/$(dirname "$file")"
    # a file the snapshot lacks (its largest are listed but absent) is left out
    git -C "$SNAPSHOT" cat-file -p "HEAD:$file" > ".sd-scripts/$file" 2>/dev/null || rm -f ".sd-scripts/$file"
done
echo "$commit" > .sd-scripts/COMMIT
du -sh .whl/danlu .whl/bnb .whl/sd-scripts .sd-scripts
echo "sd-scripts at $commit"

#!/usr/bin/env bash
# Danlu launcher: creates .venv, installs torch + requirements.txt, runs the tests or the app.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

TORCH_VERSION="2.13.0"  # pinned: an unpinned torch may pull a multi-GB build we did not choose
VENV=".venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.danlu-setup"
export PIP_DISABLE_PIP_VERSION_CHECK=1

usage() {
    cat <<EOF
Usage: ./launch.sh [setup | test [PYTEST_ARGS...] | -- APP_ARGS... | -h]

  (no arguments)   set up if needed, then start the GUI (app.py, in the browser)
  -- ARGS          the same, passing ARGS to app.py (e.g. ./launch.sh -- --port 7861 --lang zh)
  setup            create .venv and install torch and requirements.txt (skipped when up to date)
  test [ARGS]      set up if needed, then run the test suite (ARGS go to pytest, e.g. -k dataset)

Environment:
  DANLU_TORCH      which torch to install: cpu | cuda | a full pip spec, e.g.
                   "torch==$TORCH_VERSION --index-url https://download.pytorch.org/whl/cpu"
                   (default: cuda when nvidia-smi lists a GPU, else cpu)
  DANLU_PYTHON     the Python used to create .venv (default: python3; 3.10 or newer)
EOF
}

say() { echo "[danlu] $*"; }
die() { echo "[danlu] error: $*" >&2; exit 1; }

find_python() {
    local py="${DANLU_PYTHON:-python3}"
    command -v "$py" >/dev/null 2>&1 || die "$py not found: install Python 3.10 or newer (or set DANLU_PYTHON)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$("$py" --version 2>&1) is too old: Danlu needs Python 3.10 or newer (or set DANLU_PYTHON)"
    echo "$py"
}

torch_choice() {
    if [[ -n "${DANLU_TORCH:-}" ]]; then
        echo "$DANLU_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo cuda
    else
        echo cpu
    fi
}

# pip arguments for the chosen torch build. PyPI's Linux torch is the CUDA build and its macOS one
# runs on the CPU/MPS, so both plain choices are the same pin here; launch.bat differs (Windows).
torch_spec() {
    case "$1" in
        cpu | cuda) echo "torch==$TORCH_VERSION" ;;
        *) echo "$1" ;;
    esac
}

# What a setup depends on; a change in any of it redoes the setup.
setup_hash() {
    { cat requirements.txt; echo "torch: $1"; } \
        | "$VPY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

up_to_date() {
    [[ -x "$VPY" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(setup_hash "$1")" ]]
}

setup() {
    local spec
    spec="$(torch_spec "$(torch_choice)")"
    if up_to_date "$spec"; then
        [[ "${1:-}" == verbose ]] && say "setup is up to date (torch: $spec)"
        return 0
    fi
    if ! "$VPY" -c '' >/dev/null 2>&1; then
        local py
        py="$(find_python)"
        say "creating $VENV with $("$py" --version 2>&1)"
        "$py" -m venv --clear "$VENV"
    fi
    rm -f "$STAMP"
    say "installing torch ($spec)"
    local -a torch_args
    read -r -a torch_args <<<"$spec"
    "$VPY" -m pip install -q "${torch_args[@]}"
    say "installing requirements.txt"
    "$VPY" -m pip install -q -r requirements.txt
    setup_hash "$spec" >"$STAMP"
    say "setup done"
}

run_tests() {
    setup
    HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False exec "$VPY" -m pytest -q tests "$@"
}

run_app() {
    setup
    exec "$VPY" app.py "$@"
}

case "${1:-}" in
    -h | --help) usage ;;
    setup) setup verbose ;;
    test) shift; run_tests "$@" ;;
    --) shift; run_app "$@" ;;
    "") run_app ;;
    *) echo "[danlu] unknown command: $1" >&2; usage >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Set up this machine for grpo_ext, and do nothing more the second time: what is already there is left as it is.
#
#   bash scripts/setup.sh                 # into the active virtual environment, else into ./.venv (made here)
#   VENV=.venv-ci bash scripts/setup.sh   # into another virtual environment
#   EXTRAS=dev,vllm bash scripts/setup.sh # other extras of the package (default: dev)
#
# What it installs: torch (the CUDA build where nvidia-smi sees a GPU, else the CPU build), the package in editable
# mode with its extras, and the system tools the tests use, bubblewrap (the code sandbox) and shellcheck, with apt
# where the system has it and the rights to use it; otherwise it says what to install. `make setup` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-dev}"
if [ -n "${VIRTUAL_ENV:-}" ]; then
    PY="$VIRTUAL_ENV/bin/python"
else
    PY="$VENV/bin/python"
    if [ ! -x "$PY" ]; then
        echo "setup: creating the virtual environment $VENV"
        python3 -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip
    fi
fi

if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: installing torch (CUDA build: nvidia-smi sees a GPU)"
        "$PY" -m pip install --quiet torch
    else
        echo "setup: installing torch (CPU build: no GPU here)"
        # PyTorch's CPU index (PyPI's default build is CUDA's, several GB); where it cannot be reached, the CPU build
        # a machine without internet provides locally (pip's find-links), pinned.
        "$PY" -m pip install --quiet --retries 0 --timeout 15 torch --index-url https://download.pytorch.org/whl/cpu \
            2>/dev/null || "$PY" -m pip install --quiet torch==2.13.0
    fi
fi

stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.grpo_ext-setup"
wanted="$EXTRAS $(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! "$PY" -c "import grpo_ext" 2>/dev/null; then
    echo "setup: installing grpo_ext[$EXTRAS]"
    log="$(mktemp)"
    # setuptools warns at length about conf/ data directories; shown only when the install fails
    if ! "$PY" -m pip install --quiet -e ".[$EXTRAS]" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    echo "$wanted" >"$stamp"
fi

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    if command -v apt-get >/dev/null 2>&1 && { [ "${#sudo[@]}" -eq 0 ] || sudo -n true 2>/dev/null; }; then
        echo "setup: installing ${missing[*]} with apt"
        "${sudo[@]}" apt-get update -qq >/dev/null && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: could not install ${missing[*]} (no apt, or no rights to use it): install them with your" \
            "system's package manager. Without bubblewrap, python_exec refuses to run programs and its tests fail;" \
            "without shellcheck, make quality skips the shell scripts." >&2
    fi
fi
versions='from importlib.metadata import version as v; print("torch", v("torch") + ", trl", v("trl"))'
echo "setup: ready ($("$PY" -c "$versions"))"

#!/usr/bin/env bash
# Usage: bash benchmarks/gpu_wheels.sh [--quant]
#
# Run here, before benchmarks/gpu_checks.sh runs on a lent GPU machine: puts into .whl/ (git-ignored) the wheels of
# what that machine lacks (its image has torch, transformers, peft and accelerate but not TRL, datasets or Hydra;
# it cannot reach a package index), built for its Python (3.12, x86-64), and a wheel of grpo_ext itself.
# --quant adds bitsandbytes (about 41 MB of the 64 MiB a device call may carry) for peft=qlora.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_VERSION="${PY_VERSION:-3.12}"
WHEELS=.whl
rm -rf "$WHEELS"
mkdir -p "$WHEELS"

packages=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.8 omegaconf==2.3.1)
if [ "${1:-}" = "--quant" ]; then
    packages+=(bitsandbytes)
fi
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${packages[@]}"
# Published as a source archive only; pure Python, so a wheel built here installs there.
python3 -m pip wheel --quiet --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3
python3 -m pip wheel --quiet --no-deps -w "$WHEELS" . 2>/dev/null
du -sh "$WHEELS"
ls "$WHEELS"

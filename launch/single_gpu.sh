#!/usr/bin/env bash
# Train on one GPU of a multi-GPU machine (hardware=auto picks the profile for that GPU), output under OUTPUT_ROOT.
#
# Usage:
#   launch/single_gpu.sh [HYDRA_OVERRIDES...]
#   GPU=1 TASK=arithmetic MODEL=qwen2.5-0.5b-instruct launch/single_gpu.sh trainer.max_steps=500
#   GPU=0 MODEL=tiny OUTPUT_ROOT=/scratch/runs launch/single_gpu.sh logger=none
#
# Inputs (environment variables, with defaults):
#   GPU          index of the GPU to use (default 0)
#   TASK         task config name (default arithmetic)
#   MODEL        model config name (default qwen2.5-0.5b-instruct)
#   OUTPUT_ROOT  directory under which the run directory is created (default outputs)
#   PYTHON       Python interpreter with grpo_ext installed (default python)
set -euo pipefail

GPU="${GPU:-0}"
TASK="${TASK:-arithmetic}"
MODEL="${MODEL:-qwen2.5-0.5b-instruct}"
OUTPUT_ROOT="${OUTPUT_ROOT:-outputs}"
PYTHON="${PYTHON:-python}"

if ! [[ "$GPU" =~ ^[0-9]+$ ]]; then
    echo "GPU must be a GPU index (0, 1, ...), got '$GPU'" >&2
    exit 2
fi

export CUDA_VISIBLE_DEVICES="$GPU"
exec "$PYTHON" -m grpo_ext.train \
    "task=$TASK" "model=$MODEL" hardware=auto \
    "hydra.run.dir=$OUTPUT_ROOT/$TASK/$MODEL/\${now:%Y-%m-%d_%H-%M-%S}" \
    "$@"

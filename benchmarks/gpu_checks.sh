#!/usr/bin/env bash
# Usage: bash benchmarks/gpu_checks.sh CHECK...   CHECK: tests | rollout_32x256 | rollout_2x512 | profiles | micro_batches
#
# The checks that need a GPU, prepared to run on a lent machine (the device tool) in as few calls as its 15 minutes
# allow: first `bash benchmarks/gpu_wheels.sh` here, then a device call with carry [".whl"] and the command
#     bash benchmarks/gpu_checks.sh tests rollout_32x256
# Each check has its own deadline (in brackets; guesses, none has run on a GPU yet) and writes its log to
# $OUT/CHECK.log (OUT: the device tool's folder that comes back; ./gpu_checks elsewhere):
#   tests           pytest -m gpu: bf16 training, adapters (QLoRA with the --quant wheels), the compiled rollout [5 min]
#   rollout_32x256  issue 9's first configuration: TRL's generate against hardware.rollout=static_cache [7 min]
#   rollout_2x512   the seed's 10 GB configuration, 2 completions of 512 tokens [7 min]
#   profiles        issue 5's table: Qwen2.5-3B's shape, 8 x 512, each single-GPU profile beside plain TRL [8 min]
#   micro_batches   the same job on gpu_10gb with hardware.micro_batch=4, 2 and 1 (memory against passes) [8 min]
# A check that fails or runs past its deadline is reported and the next one runs; the exit status is the number of
# checks that failed or were skipped.
# BUDGET_S (default: none) bounds the whole script, for a device call's limit: each check's deadline is cut to what
# is left of it, and a check is skipped when less than 60 s is left. For one call of the device tool (600 s at
# most), list the checks in order of importance:
#     BUDGET_S=560 bash benchmarks/gpu_checks.sh tests rollout_32x256 rollout_2x512
# PYTHON (default python3) runs everything; WHEELS (default .whl) is installed first into /tmp/site when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
fi
CHECKS="tests rollout_32x256 rollout_2x512 profiles micro_batches"
for check in "$@"; do  # every name before anything runs: a typo must not cost a lease
    case " $CHECKS " in
        *" $check "*) ;;
        *) echo "unknown check: $check (one of: $CHECKS)" >&2; exit 2 ;;
    esac
done
OUT="${OUT:-gpu_checks}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled TRL_EXPERIMENTAL_SILENCE=1
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
if [ -d "$WHEELS" ]; then  # what the GPU machine's image lacks, from benchmarks/gpu_wheels.sh
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__,
    'trl', trl.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" | tee "$OUT/versions.log"

JOB=(model=qwen2.5-0.5b-instruct model.init=random hardware=gpu_80gb logger=none)
failed=0
BUDGET_S="${BUDGET_S:-}"
run() {  # run NAME DEADLINE_S COMMAND...
    local name=$1 deadline=$2
    shift 2
    if [ -n "$BUDGET_S" ]; then
        local left=$((BUDGET_S - SECONDS))
        if [ "$left" -lt 60 ]; then
            echo "== $name: skipped, ${left} s left of BUDGET_S=${BUDGET_S}"
            failed=$((failed + 1))
            return
        fi
        if [ "$left" -lt "$deadline" ]; then deadline=$left; fi
    fi
    echo "== $name (deadline ${deadline}s): $*"
    local start=$SECONDS status=0
    timeout --kill-after=10 "$deadline" "$@" >"$OUT/$name.log" 2>&1 || status=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit status $status after $((SECONDS - start)) s"
    if [ "$status" -ne 0 ]; then failed=$((failed + 1)); fi
}

for check in "$@"; do
    case "$check" in
        tests) run tests 300 "$PYTHON" -m pytest -q -n 0 -m gpu tests/backends/test_gpu.py ;;
        rollout_32x256)
            run rollout_32x256 420 "$PYTHON" benchmarks/rollout.py --steps 8 --repeats 3 "${JOB[@]}" \
                trainer.per_device_train_batch_size=32 trainer.num_generations=8 trainer.max_completion_length=256 ;;
        rollout_2x512)
            run rollout_2x512 420 "$PYTHON" benchmarks/rollout.py --steps 8 --repeats 3 "${JOB[@]}" \
                trainer.per_device_train_batch_size=2 trainer.num_generations=2 trainer.max_completion_length=512 ;;
        profiles)
            run profiles 480 "$PYTHON" benchmarks/profiles.py --steps 4 model=qwen2.5-3b-instruct model.init=random \
                trainer.max_completion_length=512 ;;
        micro_batches)
            for n in 4 2 1; do
                run "micro_batch_$n" 160 "$PYTHON" benchmarks/profiles.py --profiles gpu_10gb --baseline none --steps 3 \
                    model=qwen2.5-3b-instruct model.init=random trainer.max_completion_length=512 "hardware.micro_batch=$n"
            done ;;
    esac
done
exit "$failed"

#!/usr/bin/env bash
# Train with a vLLM server on a GPU of its own: start `vllm serve` on VLLM_GPU with the flags TRL 1.16 needs, wait
# for /health (with a deadline, while checking that the server is still alive), run the trainer on TRAIN_GPUS, and
# stop the server (its whole process group) when the trainer ends, fails, or on Ctrl-C / SIGTERM.
# `python -m grpo_ext.train hardware=gpu2_vllm_server` does the same by itself; this script is for several
# training GPUs (accelerate), for a server you want to watch in its own log, or for a trainer command of your own.
#
# Usage:
#   launch/vllm_server.sh [HYDRA_OVERRIDES...]
#   MODEL=Qwen/Qwen2.5-1.5B-Instruct launch/vllm_server.sh task=gsm8k trainer.max_steps=500
#   MODEL=/runs/sft/final_model TRAIN_GPUS=0,1,2 VLLM_GPU=3 ACCELERATE_CONFIG=zero3 launch/vllm_server.sh
#
# Inputs (environment variables, with defaults):
#   MODEL            model path or Hub id, served by vLLM and trained (required)
#   VLLM_GPU         GPU index for the server (default 1)
#   TRAIN_GPUS       GPU indices for training, comma-separated (default 0); several run under `accelerate launch`
#   ACCELERATE_CONFIG  with several TRAIN_GPUS: ddp or zero3 (launch/accelerate/NAME.yaml) or a file (default ddp)
#   SHUTDOWN_TIMEOUT   with several TRAIN_GPUS: seconds the training processes get, after a signal, to finish
#                      their step and save a checkpoint before accelerate kills them (default 600; torch's own: 30)
#   HOST             address the server listens on (default 127.0.0.1)
#   PORT             server HTTP port (default 8000)
#   GROUP_PORT       weight-sync (NCCL) port (default 51216)
#   GPU_MEMORY_UTILIZATION  share of VLLM_GPU the server takes (default 0.9)
#   DTYPE            dtype the server generates in (default auto: vLLM's choice, the model's 16-bit dtype,
#                    bfloat16 for a float32 checkpoint, float16 on GPUs before Ampere, which lack bf16)
#   STARTUP_TIMEOUT  seconds the server may take to answer /health (default 600)
#   SERVER_LOG       server output (default vllm_server.log)
#   VLLM_EXTRA_ARGS  more `vllm serve` flags, space-separated (default none)
#   VLLM             the vllm executable (default vllm)
#   PYTHON           Python interpreter with grpo_ext installed (default python)
#   TRAIN_CMD        the trainer command (default: grpo_ext.train with the right profile, model and ports)
set -euo pipefail

MODEL="${MODEL:-}"
VLLM_GPU="${VLLM_GPU:-1}"
TRAIN_GPUS="${TRAIN_GPUS:-0}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
GROUP_PORT="${GROUP_PORT:-51216}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.9}"
DTYPE="${DTYPE:-auto}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-600}"
SERVER_LOG="${SERVER_LOG:-vllm_server.log}"
VLLM_EXTRA_ARGS="${VLLM_EXTRA_ARGS:-}"
VLLM="${VLLM:-vllm}"
PYTHON="${PYTHON:-python}"
TRAIN_CMD="${TRAIN_CMD:-}"
ACCELERATE_CONFIG="${ACCELERATE_CONFIG:-ddp}"
SHUTDOWN_TIMEOUT="${SHUTDOWN_TIMEOUT:-600}"

die() {
    echo "launch/vllm_server.sh: $*" >&2
    exit 2
}

[[ -n "$MODEL" ]] || die "MODEL must name the model to serve and train (a path or a Hub id)"
[[ "$VLLM_GPU" =~ ^[0-9]+$ ]] || die "VLLM_GPU must be a GPU index, got '$VLLM_GPU'"
[[ "$TRAIN_GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "TRAIN_GPUS must be GPU indices like 0 or 0,1,2, got '$TRAIN_GPUS'"
[[ ",$TRAIN_GPUS," != *",$VLLM_GPU,"* ]] || die "VLLM_GPU=$VLLM_GPU is also in TRAIN_GPUS=$TRAIN_GPUS"
for name in PORT GROUP_PORT STARTUP_TIMEOUT SHUTDOWN_TIMEOUT; do
    [[ "${!name}" =~ ^[0-9]+$ ]] || die "$name must be a whole number, got '${!name}'"
done
[[ "$PORT" != "$GROUP_PORT" ]] || die "PORT and GROUP_PORT must differ (both $PORT)"
IFS=, read -r -a train_gpus <<<"$TRAIN_GPUS"
config_file="$ACCELERATE_CONFIG"
[[ -f "$config_file" ]] || config_file="$(dirname "${BASH_SOURCE[0]}")/accelerate/$ACCELERATE_CONFIG.yaml"
[[ -f "$config_file" ]] || die "ACCELERATE_CONFIG=$ACCELERATE_CONFIG is not ddp, zero3 or an existing file"
command -v "$VLLM" >/dev/null || die "'$VLLM' not found: install the vllm extra (pip install 'grpo-ext[vllm]')"

port_in_use() {  # something accepts connections on $1
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}
for name in PORT GROUP_PORT; do
    if port_in_use "${!name}"; then
        die "$name=${!name} is already in use on $HOST (another server or job?): choose another port"
    fi
done

health_status() {  # the HTTP status of GET /health, or nothing
    local line
    exec 4<>"/dev/tcp/$HOST/$PORT" || return 0
    printf 'GET /health HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&4
    read -r -t 5 line <&4 || true
    exec 4<&-
    echo "$line" | cut -d' ' -f2
}

SERVER_PID=""
# shellcheck disable=SC2317  # called by the EXIT trap
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true  # the server, and whatever it left in its group
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r -a extra <<<"$VLLM_EXTRA_ARGS"
echo "starting vLLM on GPU $VLLM_GPU, port $PORT (log: $SERVER_LOG)" >&2
CUDA_VISIBLE_DEVICES="$VLLM_GPU" VLLM_SERVER_DEV_MODE=1 setsid "$VLLM" serve "$MODEL" \
    --host "$HOST" --port "$PORT" --gpu-memory-utilization "$GPU_MEMORY_UTILIZATION" --dtype "$DTYPE" \
    --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1 \
    "${extra[@]}" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
until [[ "$(health_status 2>/dev/null)" == "200" ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" && code=0 || code=$? # (the EXIT trap still clears whatever it left in its group)
        echo "launch/vllm_server.sh: the vLLM server exited with code $code while starting; end of $SERVER_LOG:" >&2
        tail -n 15 "$SERVER_LOG" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "launch/vllm_server.sh: the vLLM server did not answer /health within ${STARTUP_TIMEOUT} s;" \
            "stopping it. End of $SERVER_LOG:" >&2
        tail -n 15 "$SERVER_LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "vLLM is healthy on port $PORT; training on GPU(s) $TRAIN_GPUS" >&2

common=("model.path=$MODEL" hardware.vllm.managed=false "hardware.vllm.host=$HOST" "hardware.vllm.port=$PORT"
    "hardware.vllm.group_port=$GROUP_PORT")
if [[ -n "$TRAIN_CMD" ]]; then
    read -r -a trainer <<<"$TRAIN_CMD"
    trainer+=("${common[@]}")
elif ((${#train_gpus[@]} > 1)); then
    # accelerate's launcher (torch's elastic agent) passes a signal on to the processes, then kills them after
    # TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (where the installed torch reads it; 2.13 does)
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="$SHUTDOWN_TIMEOUT"
    if [[ "$ACCELERATE_CONFIG" == zero3 ]]; then # sharded weights: the main process cannot generate alone
        common+=(eval.during_training=false)
    fi
    trainer=("$PYTHON" -m accelerate.commands.launch --config_file "$config_file" --num_processes "${#train_gpus[@]}"
        -m grpo_ext.train hardware=multigpu "${common[@]}")
else
    trainer=("$PYTHON" -m grpo_ext.train hardware=gpu2_vllm_server "${common[@]}")
fi
# In the background, so that a SIGTERM (scheduler) or Ctrl-C reaches this script at once: it is passed on to the
# trainer as SIGTERM (the trainer saves a checkpoint and stops), then the EXIT trap stops the server.
CUDA_VISIBLE_DEVICES="$TRAIN_GPUS" "${trainer[@]}" "$@" &
TRAINER_PID=$!
trap 'kill -TERM "$TRAINER_PID" 2>/dev/null || true' INT TERM
while true; do
    wait "$TRAINER_PID" && status=0 || status=$?
    kill -0 "$TRAINER_PID" 2>/dev/null || break # wait also returns when a trapped signal arrives
done
if ((status != 0)) && ! kill -0 "$SERVER_PID" 2>/dev/null; then # the trainer failed, and the server is gone
    wait "$SERVER_PID" && code=0 || code=$?
    echo "launch/vllm_server.sh: the vLLM server exited with code $code during training; end of $SERVER_LOG:" >&2
    tail -n 15 "$SERVER_LOG" >&2
fi
exit "$status"

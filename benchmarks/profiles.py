"""Peak GPU memory and step time of the single-GPU hardware profiles, against plain TRL defaults on the same job.

  python benchmarks/profiles.py model=qwen2.5-3b-instruct model.init=random trainer.max_completion_length=512
  python benchmarks/profiles.py --profiles gpu_10gb --baseline none model=qwen2.5-7b-instruct model.init=random \
      peft=qlora trainer.max_completion_length=512
  python benchmarks/profiles.py --profiles cpu --baseline none --steps 2 model=tiny   (a smoke run on the CPU)

Every measurement is a fresh process running ``grpo_ext.train``'s job (``train()``; no eval, no checkpoints) for
``--steps`` steps of 8 generations of one prompt (``trainer.num_generations=8``, ``per_device_train_batch_size=8``,
unless overridden), so one run's cached memory cannot flatter the next. The baseline is ``hardware=gpu``: bf16 and
otherwise TRL's own defaults (checkpointing, its generate, no adapters). Reported: peak memory reserved by PyTorch's
allocator (what the card must hold) and allocated, and the median step time after the first step; an out-of-memory
run is reported as such. Nothing is asserted; the figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

JOB = [
    "task=arithmetic",
    "logger=none",
    "eval.during_training=false",
    "trainer.save_strategy=no",
    "trainer.disable_tqdm=true",
    "trainer.num_generations=8",
    "trainer.per_device_train_batch_size=8",
    "trainer.logging_steps=1",
]


def measure_one(profile: str, steps: int, overrides: list[str]) -> dict:
    """In this process: train ``steps`` steps with ``hardware=profile``; peak memory and step times."""
    import torch
    from hydra import compose, initialize_config_module

    from grpo_ext.config.schema import register_configs
    from grpo_ext.run.records import read_metrics
    from grpo_ext.train import train

    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config",
                      overrides=[*JOB, f"trainer.max_steps={steps}", f"hardware={profile}", *overrides])  # fmt: skip
    result: dict = {"profile": profile, "peft": cfg.peft.name}
    with tempfile.TemporaryDirectory() as run_dir:
        try:
            train(cfg, Path(run_dir))
        except torch.OutOfMemoryError as err:
            return {**result, "error": f"out of memory: {str(err).splitlines()[0]}"}
        times = [r["step_time"] for r in read_metrics(Path(run_dir)) if "step_time" in r]
    if torch.cuda.is_available():
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["step_s"] = statistics.median(times[1:] or times)
    return result


def measure(profile: str, steps: int, overrides: list[str]) -> dict:
    """``measure_one`` in a fresh process; its JSON result (or the failure's last lines)."""
    command = [sys.executable, __file__, "--one", profile, "--steps", str(steps), *overrides]
    run = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith('{"profile"')]
    if run.returncode or not lines:
        last = ((run.stderr or run.stdout).strip().splitlines() or [""])[-1]
        return {"profile": profile, "error": f"exit {run.returncode}: {last}"}
    return json.loads(lines[-1])


def row(result: dict, baseline: dict | None) -> str:
    if "error" in result:
        return f"| {result['profile']} | {result.get('peft', '')} | {result['error'][:200]} | | | |"
    ratio = ""
    if baseline and "step_s" in baseline and baseline is not result:
        ratio = f"{baseline['step_s'] / result['step_s']:.2f}x"
    reserved = f"{result['peak_reserved_gib']:.2f}" if "peak_reserved_gib" in result else "-"
    allocated = f"{result['peak_allocated_gib']:.2f}" if "peak_allocated_gib" in result else "-"
    return f"| {result['profile']} | {result['peft']} | {reserved} | {allocated} | {result['step_s']:.2f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="gpu_10gb,gpu_24gb,gpu_80gb")
    parser.add_argument("--baseline", default="gpu", help="the plain-TRL profile to compare with; none: skip it")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.steps, args.overrides)))
        return
    baseline = None if args.baseline == "none" else measure(args.baseline, args.steps, args.overrides)
    results = [measure(p, args.steps, args.overrides) for p in args.profiles.split(",")]
    print(f"job: {' '.join([*JOB, *args.overrides])}, {args.steps} steps")
    print("| profile | peft | peak reserved GiB | peak allocated GiB | step s (median) | speed vs baseline |")
    print("| --- | --- | --- | --- | --- | --- |")
    for result in ([baseline] if baseline else []) + results:
        print(row(result, baseline))


if __name__ == "__main__":
    main()

"""TRL's own generate against ``hardware.rollout=static_cache`` (``grpo_ext.backends.rollout``), on the same job,
in one run.

    python benchmarks/rollout.py --steps 50 experiment=arithmetic_proof model.path=WARM_START hardware=cpu
    python benchmarks/rollout.py --steps 8 model=qwen2.5-0.5b-instruct model.init=random hardware=gpu_80gb \\
        trainer.per_device_train_batch_size=32 trainer.num_generations=8 trainer.max_completion_length=256

Three measurements, each for both paths, with the same overrides:

1. generation alone: the model's ``generate`` with TRL's settings (dynamic cache, compilation off, as TRL 1.16
   builds them) and through the rollout (static cache, compiled on CUDA), on one training batch of prompts, every
   completion run to ``max_completion_length`` tokens so both produce the same number of tokens; median of
   ``--repeats`` calls after a first (compiling) one. On CUDA, beside tokens per second, the bandwidth floor: the
   time to read the weights once per decode step at this device's copy bandwidth, measured here;
2. training: ``python -m grpo_ext.train`` for ``--steps`` steps with each path, the same seed: median step time
   (TRL's ``step_time``, after the first two steps), mean training reward over the first and second half, final
   loss, and held-out accuracy when the overrides turn evaluation on;
3. log-probabilities: the rollout's, recorded while sampling, against the trainer's own forward pass on the same
   tokens, in the run's dtype, on the model the static-cache run trained: mean and largest absolute difference.

Nothing is asserted; the figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from grpo_ext.backends import models
from grpo_ext.backends.rollout import StaticCacheRollout
from grpo_ext.config.grpo import make_grpo_config
from grpo_ext.config.schema import register_configs
from grpo_ext.tasks import build_task

PATHS = ("trl", "static_cache")


def now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def trainer_for(cfg, model_path: str, out: Path):
    """A GRPOTrainer for the job ``cfg`` describes, with the static-cache rollout installed (nothing is trained)."""
    from trl import GRPOTrainer

    args = make_grpo_config(cfg, str(out), [1.0])
    return GRPOTrainer(model=model_path, reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
                       train_dataset=build_task(cfg.task).train, rollout_func=StaticCacheRollout())  # fmt: skip


def generation_times(trainer, prompts: list, repeats: int) -> dict[str, float]:
    """Median seconds of one batch's generation with TRL's settings and with the rollout's, every completion at
    full length."""
    from transformers import GenerationConfig

    rollout, args = trainer.rollout_func, trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    ids = rollout.tokenize(prompts, trainer.processing_class, args.chat_template_kwargs or {})
    full = {"min_new_tokens": args.max_completion_length}
    sampling, static = rollout.generation_config(trainer)
    static.update(**full)
    trl_config = GenerationConfig(max_new_tokens=args.max_completion_length, do_sample=True,
                                  temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                                  pad_token_id=trainer.processing_class.pad_token_id,
                                  eos_token_id=trainer.eos_token_ids, cache_implementation=args.cache_implementation,
                                  disable_compile=True, **full)  # fmt: skip
    unpadded = StaticCacheRollout(pad_to=1).left_pad(ids, trainer.processing_class.pad_token_id, model.device)
    bucketed = rollout.left_pad(ids, trainer.processing_class.pad_token_id, model.device)
    runs = {"trl": (unpadded, trl_config, []), "static_cache": (bucketed, static, sampling)}
    times = {}
    with torch.no_grad():
        for name, ((input_ids, mask), config, processors) in runs.items():
            seconds = []
            for _ in range(repeats + 1):  # the first call compiles (static cache on CUDA)
                started = now()
                model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                               logits_processor=list(processors))  # fmt: skip
                seconds.append(now() - started)
            times[name] = statistics.median(seconds[1:])
            times[f"{name} first call"] = seconds[0]
    return times


def bandwidth_floor(model, steps: int) -> float | None:
    """Seconds to read the weights ``steps`` times at this GPU's measured copy bandwidth; None off CUDA."""
    if not torch.cuda.is_available():
        return None
    block = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB
    target = torch.empty_like(block)
    target.copy_(block)
    started = now()
    for _ in range(20):
        target.copy_(block)
    bandwidth = 2 * 20 * block.numel() / (now() - started)  # bytes read and written per second
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return steps * weights / bandwidth


def logprob_difference(trainer, prompts: list) -> tuple[float, float]:
    """Mean and largest |rollout log-prob - trainer log-prob| over the sampled tokens of one batch."""
    out = trainer.rollout_func(prompts, trainer)
    model, temperature = trainer.model, trainer.args.temperature
    diffs = []
    with torch.no_grad(), trainer.accelerator.autocast():
        for prompt_ids, ids, logprobs in zip(out["prompt_ids"], out["completion_ids"], out["logprobs"], strict=True):
            tokens = torch.tensor([prompt_ids + ids], device=model.device)
            logits = model(tokens).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
            own = torch.log_softmax(logits, -1).gather(1, tokens[0, len(prompt_ids) :, None]).squeeze(1)
            diffs.append((own.cpu() - torch.tensor(logprobs)).abs())
    every = torch.cat(diffs)
    return every.mean().item(), every.max().item()


def train(path: str, overrides: list[str], steps: int, out: Path) -> dict[str, float]:
    """One ``grpo_ext.train`` run with ``hardware.rollout=path``; its figures from ``metrics.jsonl``."""
    run_dir = out / path
    command = [sys.executable, "-m", "grpo_ext.train", *overrides, f"hardware.rollout={path}", "logger=none",
               f"trainer.max_steps={steps}", "trainer.save_strategy=no", "trainer.disable_tqdm=true",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    with open(out / f"{path}.log", "w") as log:
        if subprocess.call(command, stdout=log, stderr=subprocess.STDOUT):
            sys.exit(f"the {path} run failed; see {out / f'{path}.log'}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "reward" in r]
    half = len(trained) // 2
    figures = {
        "median step s": statistics.median(r["step_time"] for r in trained[2:] or trained),
        "reward, first half": statistics.mean(r["reward"] for r in trained[:half]),
        "reward, second half": statistics.mean(r["reward"] for r in trained[half:]),
        "final loss": trained[-1]["loss"],
        "mean completion tokens": statistics.mean(r["completions/mean_length"] for r in trained),
    }
    evals = [r for r in records if "eval/accuracy" in r]
    if evals:
        figures["held-out accuracy at the end"] = evals[-1]["eval/accuracy"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="generation calls timed per path, after the first")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the job, as for grpo_ext.train")
    args = parser.parse_intermixed_args()
    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config", overrides=["logger=none", *args.overrides])
    if cfg.hardware.name == "auto":
        sys.exit("name a hardware profile (hardware=cpu, hardware=gpu_80gb, ...): the comparison needs a fixed one")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        trainer = trainer_for(cfg, models.resolve(cfg.model), out / "generation")
        batch = [row["prompt"] for row in build_task(cfg.task).train.select(range(trainer.args.generation_batch_size))]
        prompts = [p for p in batch[:: trainer.args.num_generations] for _ in range(trainer.args.num_generations)]
        times = generation_times(trainer, prompts, args.repeats)
        floor = bandwidth_floor(trainer.model, trainer.args.max_completion_length)
        figures = {path: train(path, list(args.overrides), args.steps, out) for path in PATHS}
        trained = trainer_for(cfg, str(out / "static_cache" / "final_model"), out / "check")
        mean_diff, max_diff = logprob_difference(trained, prompts)

    tokens = len(prompts) * cfg.trainer.max_completion_length
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"job: {' '.join(args.overrides)}\ndevice: {device}; {len(prompts)} completions x "
          f"{cfg.trainer.max_completion_length} tokens a batch")  # fmt: skip
    print(f"{'generation of one batch':<34}{'seconds':>10}{'tokens/s':>12}{'first call s':>14}")
    for path in PATHS:
        print(f"{path:<34}{times[path]:>10.3f}{tokens / times[path]:>12.0f}{times[f'{path} first call']:>14.2f}")
    print(f"{'ratio (trl / static_cache)':<34}{times['trl'] / times['static_cache']:>10.2f}")
    if floor is not None:
        print(f"{'bandwidth floor (weights per step)':<34}{floor:>10.3f}{tokens / floor:>12.0f}")
    print(f"\n{f'training, {args.steps} steps':<34}" + "".join(f"{path:>16}" for path in PATHS))
    for key in figures["trl"]:
        print(f"{key:<34}" + "".join(f"{figures[path].get(key, float('nan')):>16.4g}" for path in PATHS))
    ratio = figures["trl"]["median step s"] / figures["static_cache"]["median step s"]
    print(f"{'step-time ratio (trl / static_cache)':<34}{ratio:>16.2f}")
    print(f"\nrollout log-probs against the trainer's ({cfg.hardware.dtype}): mean |diff| {mean_diff:.2e}, "
          f"largest {max_diff:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Does grpo_ext add time to a TRL step? Runs the same GRPO job twice in one process and prints step times.

  A: ``grpo_ext.train.train`` (our config, rewards, callbacks, model resolution)
  B: a plain TRL script: ``GRPOTrainer`` with the same model directory, dataset, ``GRPOConfig`` and an equivalent
     reward written as a bare function, no callbacks of ours.

Usage (any Hydra overrides of ``python -m grpo_ext.train`` apply to both):
  python benchmarks/overhead.py model=tiny hardware=cpu trainer.max_steps=12
  python benchmarks/overhead.py model=qwen2.5-0.5b-instruct model.init=random hardware=gpu trainer.max_steps=12 \
      trainer.per_device_train_batch_size=32 trainer.num_generations=8 trainer.max_completion_length=256

The two run in alternation, B A B A (``ROUNDS`` rounds, plain TRL first), so that neither gains from warm caches.
Prints the median ``step_time`` (TRL's own per-step timer) over the steps after the first two of each run, for A
and B, and their ratio. Nothing is asserted: the figures go to the README.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module

from grpo_ext.backends import models
from grpo_ext.config.grpo import make_grpo_config
from grpo_ext.config.schema import register_configs
from grpo_ext.rewards.arithmetic import ArithmeticShaping
from grpo_ext.run.records import read_metrics
from grpo_ext.tasks import build_task
from grpo_ext.train import train

WARMUP_STEPS = 2
ROUNDS = 2


def plain_reward(completions, answer, **kwargs):
    """The same shaping as arithmetic_shaping, as a user of bare TRL would write it."""
    shaping = ArithmeticShaping()
    return [shaping.score(c, a)["reward"] for c, a in zip(completions, answer, strict=True)]


def timed_steps(step_times: list[float]) -> list[float]:
    return step_times[WARMUP_STEPS:] or step_times


def run_plain_trl(cfg, out: Path) -> list[float]:
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    class StepTimes(TrainerCallback):
        times: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "step_time" in logs:
                self.times.append(logs["step_time"])

    args = make_grpo_config(cfg, str(out), [1.0])
    splits = build_task(cfg.task)
    trainer = GRPOTrainer(
        model=models.resolve(cfg.model), reward_funcs=[plain_reward], args=args, train_dataset=splits.train
    )
    callback = StepTimes()
    trainer.add_callback(callback)
    trainer.train()
    return callback.times


def main(overrides: list[str]) -> None:
    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config", overrides=["logger=none", "trainer.save_strategy=no", *overrides])
    print("config:", " ".join(overrides))
    models.resolve(cfg.model)  # build or fetch once, outside both timings
    ours: list[float] = []
    plain: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            plain += timed_steps(run_plain_trl(cfg, Path(tmp) / f"plain{round_}"))
            train(cfg, Path(tmp) / f"ours{round_}")
            records = read_metrics(Path(tmp) / f"ours{round_}")
            ours += timed_steps([r["step_time"] for r in records if "step_time" in r])
    a, b = statistics.median(ours), statistics.median(plain)
    print(f"steps timed: {len(ours)} per side ({ROUNDS} runs each, {WARMUP_STEPS} warm-up steps dropped per run)")
    print(f"grpo_ext  median step {a:.3f} s  (min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"plain TRL median step {b:.3f} s  (min {min(plain):.3f}, max {max(plain):.3f})")
    print(f"ratio grpo_ext / plain TRL: {a / b:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Where does a GRPO step's time go? Splits TRL's step into generation, log-prob passes, reward, training
forward+backward, optimizer and the rest.

  python benchmarks/step_profile.py model=tiny hardware=cpu trainer.max_steps=6
  python benchmarks/step_profile.py model=qwen2.5-0.5b-instruct model.init=random hardware=gpu trainer.max_steps=6 \
      trainer.per_device_train_batch_size=32 trainer.num_generations=8 trainer.max_completion_length=256

The job is ``grpo_ext.train``'s (same config, data, rewards); the measurement is instrumentation around the model
and the rewards, not a change to TRL: ``generate`` is wrapped, forward hooks time every forward pass (without
gradients: the log-prob passes; with gradients: training), a backward hook on the model marks the end of each
backward, Trainer callbacks time the optimizer step and the whole step. On a GPU every mark synchronizes first, so
the parts add up (and the total is a little slower than an uninstrumented step). Prints the median per step, over
the steps after the first, and the share of each part. Nothing is asserted.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from transformers import TrainerCallback

from grpo_ext.backends import hardware, models
from grpo_ext.config.grpo import make_grpo_config
from grpo_ext.config.schema import register_configs
from grpo_ext.monitor.workarounds import OneInputGradHook
from grpo_ext.rewards import build_rewards
from grpo_ext.rewards.guard import guard_all
from grpo_ext.tasks import build_task

PARTS = ("generation", "log-prob forwards", "reward", "train forward+backward", "optimizer", "other")


def now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class StepClock(TrainerCallback):
    """Seconds per part for each step; ``add`` is called by the instruments below."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = defaultdict(float)
        self.step_started = self.optimizer_started = 0.0

    def add(self, part: str, seconds: float) -> None:
        self.current[part] += seconds

    def on_step_begin(self, args, state, control, **kwargs):
        self.current = defaultdict(float)
        self.step_started = now()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_started = now()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.add("optimizer", now() - self.optimizer_started)

    def on_step_end(self, args, state, control, **kwargs):
        total = now() - self.step_started
        measured = sum(self.current.values())
        self.steps.append({**self.current, "other": total - measured, "total": total})


def instrument_reference(ref_model: torch.nn.Module, clock: StepClock) -> None:
    """Time the reference model's forwards (KL's log-probs) as log-prob passes."""
    start = {"t": 0.0}
    ref_model.register_forward_pre_hook(lambda module, args: start.update(t=now()))
    ref_model.register_forward_hook(lambda module, args, output: clock.add("log-prob forwards", now() - start["t"]))


def instrument(model: torch.nn.Module, clock: StepClock) -> None:
    """Time generate(), every forward (split by grad mode) and every backward of ``model``."""
    generate = model.generate
    state = {"generating": False, "forward_start": 0.0, "backward_from": None}

    def timed_generate(*args, **kwargs):
        start = now()
        state["generating"] = True
        try:
            return generate(*args, **kwargs)
        finally:
            state["generating"] = False
            clock.add("generation", now() - start)

    def before_forward(module, args):
        if not state["generating"]:
            state["forward_start"] = now()

    def after_forward(module, args, output):
        if state["generating"]:
            return
        end = now()
        if torch.is_grad_enabled():
            clock.add("train forward+backward", end - state["forward_start"])
            state["backward_from"] = end
        else:
            clock.add("log-prob forwards", end - state["forward_start"])

    def after_backward(module, grad_input, grad_output):
        if state["backward_from"] is not None:
            clock.add("train forward+backward", now() - state["backward_from"])
            state["backward_from"] = None

    model.generate = timed_generate
    model.register_forward_pre_hook(before_forward)
    model.register_forward_hook(after_forward)
    model.get_input_embeddings().register_full_backward_hook(after_backward)


def timed_reward(reward, clock: StepClock):
    """``reward`` with its wall time added to the clock (async rewards stay async)."""
    import inspect

    if inspect.iscoroutinefunction(type(reward).__call__):

        async def call(completions, **kwargs):
            start = now()
            try:
                return await reward(completions, **kwargs)
            finally:
                clock.add("reward", now() - start)
    else:

        def call(completions, **kwargs):
            start = now()
            try:
                return reward(completions, **kwargs)
            finally:
                clock.add("reward", now() - start)

    call.__name__ = reward.__name__
    return call


def main(overrides: list[str]) -> None:
    from trl import GRPOTrainer

    # The embedding's input needs no gradient, so its backward hook fires on its output's gradient: fine here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config", overrides=["logger=none", "trainer.save_strategy=no", *overrides])
    clock = StepClock()
    funcs, weights = build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))
    with tempfile.TemporaryDirectory() as tmp:
        args = make_grpo_config(cfg, str(Path(tmp)), weights)
        trainer = GRPOTrainer(
            model=models.resolve(cfg.model),
            reward_funcs=[timed_reward(g, clock) for g in guard_all(funcs, cfg.reward_failure_limit)],
            args=args,
            train_dataset=build_task(cfg.task).train,
            callbacks=[clock, OneInputGradHook()],  # as grpo_ext.train installs it
            rollout_func=hardware.rollout_func(cfg.hardware, args.use_vllm, cfg.peft.name),  # hardware.rollout=...
        )
        instrument(trainer.model, clock)
        if getattr(trainer, "ref_model", None) is not None:
            instrument_reference(trainer.ref_model, clock)
        trainer.train()
    steps = clock.steps[1:] or clock.steps
    total = statistics.median(s["total"] for s in steps)
    print(f"config: {' '.join(overrides)}")
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}; "
          f"steps timed: {len(steps)} (first dropped)")  # fmt: skip
    print(f"{'part':<26}{'median s/step':>14}{'share':>8}")
    for part in PARTS:
        seconds = statistics.median(s.get(part, 0.0) for s in steps)
        print(f"{part:<26}{seconds:>14.3f}{seconds / total:>8.0%}")
    print(f"{'total':<26}{total:>14.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

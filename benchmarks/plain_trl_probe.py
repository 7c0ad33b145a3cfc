"""The learning probe with TRL alone: plain-text arithmetic prompts, TRL's SFTTrainer, then TRL's GRPOTrainer,
with none of grpo_ext's training code (only its task data and its tiny model). A control for the learning proof: if
GRPO lowers held-out accuracy here too, the cause is not in grpo_ext.

  python benchmarks/plain_trl_probe.py sft --steps 400 --out probe           # held-out greedy accuracy after SFT
  python benchmarks/plain_trl_probe.py grpo --lr 5e-5 --steps 150 --out probe [KEY=VALUE ...]  # GRPOConfig fields
  python benchmarks/plain_trl_probe.py grpo --reward even --steps 60 --out probe   # a target with no arithmetic
  python benchmarks/plain_trl_probe.py sft --steps 1200 --out probe19 --config task.max_operand=19 \
      --config task.train_size=30000    # a larger problem space (the same --config for the grpo stage)

Prompts are ``Q:(a op1 b) op2 c\\nA:`` and the answer follows, then the end-of-turn token; the reward is the seeds'
shaping (0.2 for an integer answer, +0.2 within 1, +0.6 exact); controls: ``--reward even`` (1 for an even integer
answer: learnable without arithmetic, so it shows whether the trainer moves the policy at all) and ``--reward noise``
(uniform random). Held-out greedy accuracy on the task's 500 eval problems is printed before GRPO and every 25
steps, with the mean training reward since the last print. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import torch
from datasets import Dataset
from hydra import compose, initialize_config_module
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from grpo_ext.backends import models
from grpo_ext.config.schema import register_configs
from grpo_ext.tasks import build_task

EVAL_EVERY = 25


def data(extra: list[str]) -> tuple[Dataset, Dataset, str]:
    """The arithmetic task's splits as plain-text prompts, and the tiny model; ``extra``: more Hydra overrides
    (``task.max_operand=19``, ``model.architecture.intermediate_size=1024``, ...)."""
    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        overrides = ["task=arithmetic", "task.train_size=8000", "task.eval_size=500", "hardware=cpu", "model=tiny"]
        cfg = compose(config_name="config", overrides=[*overrides, *extra])
    splits = build_task(cfg.task)

    def plain(split: Dataset) -> Dataset:
        return Dataset.from_dict({
            "prompt": [f"Q:{e}\nA:" for e in split["expression"]],
            "completion": [f" {a}<|im_end|>" for a in split["answer"]],
            "answer": split["answer"],
        })  # fmt: skip

    return plain(splits.train), plain(splits.eval), models.resolve(cfg.model)


def score(text: str, gold: str) -> float:
    answer = text.split("<|im_end|>")[0].strip().split("\n")[0].strip()
    if not re.fullmatch(r"-?\d+", answer):
        return 0.0
    return 0.2 + 0.2 * (abs(int(answer) - int(gold)) <= 1) + 0.6 * (int(answer) == int(gold))


def even(text: str, gold: str) -> float:
    answer = text.split("<|im_end|>")[0].strip()
    return float(re.fullmatch(r"-?\d+", answer) is not None and int(answer) % 2 == 0)


REWARDS = {"shaped": score, "even": even, "noise": lambda text, gold: random.random()}


def accuracy(model, tokenizer, eval_set: Dataset) -> float:
    model.eval()
    tokenizer.padding_side = "left"
    correct = 0
    with torch.no_grad():
        for start in range(0, len(eval_set), 100):
            rows = eval_set[start : start + 100]
            batch = tokenizer(rows["prompt"], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            correct += sum(score(t, g) == 1.0 for t, g in zip(texts, rows["answer"], strict=True))
    model.train()
    return correct / len(eval_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["sft", "grpo"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--out", type=Path, default=Path("probe"))
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for the task or model, e.g. task.max_operand=19 (repeatable; give the "
                        "same ones to both stages)")  # fmt: skip
    parser.add_argument("--reward", choices=sorted(REWARDS), default="shaped")
    parser.add_argument("overrides", nargs="*", help="GRPOConfig fields as KEY=VALUE (JSON values)")
    args = parser.parse_intermixed_args()
    train, eval_set, tiny = data(args.config)
    common = {"use_cpu": not torch.cuda.is_available(), "save_strategy": "no", "report_to": [], "disable_tqdm": True,
              "gradient_checkpointing": False, "seed": 42}  # fmt: skip
    if args.stage == "sft":
        config = SFTConfig(output_dir=str(args.out / "sft"), max_steps=args.steps, per_device_train_batch_size=128,
                           learning_rate=1e-3, logging_steps=50, max_length=64, **common)  # fmt: skip
        trainer = SFTTrainer(model=tiny, args=config, train_dataset=train.remove_columns(["answer"]))
        trainer.train()
        trainer.save_model(str(args.out / "sft" / "final"))
        held_out = accuracy(trainer.model, trainer.processing_class, eval_set)
        print(f"SFT {args.steps} steps: held-out accuracy {held_out:.1%}")
        return
    extra = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    rewards_seen: list[float] = []

    def reward(completions: list[str], answer: list[str], **_: object) -> list[float]:
        values = [REWARDS[args.reward](c, a) for c, a in zip(completions, answer, strict=True)]
        rewards_seen.extend(values)
        return values

    class Evaluate(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            if state.global_step % EVAL_EVERY == 0:
                mean = sum(rewards_seen) / max(1, len(rewards_seen))
                rewards_seen.clear()
                held_out = accuracy(model, processing_class, eval_set)
                print(f"step {state.global_step}: {held_out:.1%} [training reward {mean:.3f}]", flush=True)

    settings = {"per_device_train_batch_size": 128, "num_generations": 8, "max_completion_length": 24, "beta": 0.04,
                "loss_type": "grpo", "logging_steps": 1000, **common, **extra}  # fmt: skip
    config = GRPOConfig(output_dir=str(args.out / "grpo"), learning_rate=args.lr, max_steps=args.steps, **settings)
    trainer = GRPOTrainer(
        model=str(args.out / "sft" / "final"),
        reward_funcs=[reward],
        args=config,
        train_dataset=train.remove_columns(["completion"]),
        callbacks=[Evaluate()],
    )
    print(f"step 0: {accuracy(trainer.model, trainer.processing_class, eval_set):.1%}", flush=True)
    trainer.train()


if __name__ == "__main__":
    main()

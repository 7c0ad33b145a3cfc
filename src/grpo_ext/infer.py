"""One answer from a model, for a quick look: ``python -m grpo_ext.infer "What is (4 - 9) * 6?" model.path=DIR``.

The question goes to the model as the user's message (after the task's system prompt, if it has one), through the
model's chat template; the completion is printed. Options: ``--samples N`` (N sampled answers instead of the greedy
one), ``--temperature``, ``--max-new-tokens`` (default: the task's ``max_completion_length``), and ``--answer GOLD``
to score each answer with the task's first reward (the gold goes to the reward's ``answer`` column; ``--column
NAME=VALUE`` gives any other column it reads, the value read as JSON when it is JSON). Any other argument is a
config override, as for ``grpo_ext.train`` (``task=``, ``model=``, ``model.path=``, ``hardware=``).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

USAGE_ERROR = 2


def compose(overrides: list[str]) -> Any:
    """The config ``grpo_ext.train`` would compose from ``overrides`` (without running Hydra's app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from grpo_ext.backends.hardware import resolve_auto
    from grpo_ext.config.schema import register_configs

    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        return resolve_auto(hydra_compose(config_name="config", overrides=overrides), overrides)


def is_override(text: str) -> bool:
    """Whether ``text`` is a config override (``model.path=DIR``, ``+trainer.x=1``) rather than a question: its key
    starts with a node of the root config."""
    import dataclasses

    from grpo_ext.config.schema import config_schema

    key = re.match(r"^[+~]{0,2}([\w.]+)=", text)
    roots = {f.name for f in dataclasses.fields(config_schema())} | {"experiment", "hydra"}
    return key is not None and key.group(1).split(".")[0] in roots


def main(argv: list[str] | None = None) -> int:
    from grpo_ext.backends.hardware import check_device

    parser = argparse.ArgumentParser(prog="python -m grpo_ext.infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("question", help="the user's message")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.path=DIR task=arithmetic")
    parser.add_argument("--samples", type=int, default=0, help="sampled answers (default: one greedy answer)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--answer", default=None, help="the gold answer: score each completion with the task reward")
    parser.add_argument(
        "--column", action="append", default=[], metavar="NAME=VALUE",
        help="a column the task reward reads (the value as JSON, else as a string), e.g. --column words=8",
    )  # fmt: skip
    args = parser.parse_intermixed_args(argv)  # overrides after options too: "Q" --samples 4 model.path=DIR
    try:
        if is_override(args.question):
            raise ValueError(
                f'the question comes first, in quotes: python -m grpo_ext.infer "What is 2 + 3?" model.path=DIR; '
                f"{args.question!r} is a config override"
            )
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise ValueError(f"expected config overrides KEY=VALUE after the question, got {bad}")
        if args.samples < 0 or args.temperature <= 0 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
            raise ValueError("--samples must be >= 0, --temperature > 0 and --max-new-tokens >= 1")
        columns = _columns(args.column, args.answer)
        cfg = compose(args.overrides)
        check_device(cfg.hardware)
        reward = _scoring_reward(cfg, columns) if columns else None
    except Exception as err:  # Hydra raises several types for bad overrides; all are usage errors here
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR

    from grpo_ext.backends.generation import generate, load_model
    from grpo_ext.backends.models import ModelUnavailableError
    from grpo_ext.rewards.calling import as_trl_passes, score_tolerantly, trl_arguments
    from grpo_ext.rewards.guard import RewardFailureError
    from grpo_ext.tasks.base import chat_prompt

    try:
        model, tokenizer = load_model(cfg)
    except (ModelUnavailableError, ValueError, OSError) as err:
        print(f"model error: {err}", file=sys.stderr)
        return 1
    prompt = chat_prompt(args.question, cfg.task.system_prompt)
    completions = generate(
        model, tokenizer, [prompt], max_new_tokens=args.max_new_tokens or cfg.task.max_completion_length,
        samples=args.samples, temperature=args.temperature,
    )[0]  # fmt: skip
    results: list[dict[str, Any]] = [{} for _ in completions]
    if reward is not None:
        try:
            passed = as_trl_passes(completions, prompt)
            context = trl_arguments([prompt] * len(completions), completions, tokenizer)
            repeated = {k: [v] * len(completions) for k, v in columns.items()}
            results = score_tolerantly(reward, passed, repeated, context)
        except RewardFailureError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        finally:
            getattr(reward, "close", lambda: None)()
    for i, (completion, result) in enumerate(zip(completions, results, strict=True)):
        if len(completions) > 1:
            print(f"--- sample {i + 1}")
        print(completion)
        if result:
            detail = result.get("status") or result.get("error")  # error: the reward failed on it
            status = f" ({detail})" if detail else ""
            print(f"[reward {result.get('reward')}{status}]")
    return 0


def _columns(given: list[str], answer: str | None) -> dict[str, Any]:
    """The columns of ``--column NAME=VALUE`` (VALUE as JSON, else the string) and ``--answer`` (the string)."""
    import json

    columns: dict[str, Any] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--column takes NAME=VALUE, got {item!r}")
        try:
            columns[name] = json.loads(value)
        except json.JSONDecodeError:
            columns[name] = value
    if answer is not None:
        columns["answer"] = answer
    return columns


def _scoring_reward(cfg: Any, columns: dict[str, Any]) -> Any:
    """The task's first reward, built, once the columns it reads are all given; ``ValueError`` naming those that
    are not (before any model loads)."""
    from grpo_ext.config import plain_list
    from grpo_ext.rewards import build_rewards, reward_columns

    if cfg.task.name == "mix":
        raise ValueError(
            "a mixture has a reward for each part: to score, name the part's task and settings (task=arithmetic, "
            "as in the mixture's task.parts), or leave --answer and --column out to read the answers"
        )
    (reward,), _ = build_rewards(plain_list(cfg.task.rewards)[:1])  # the one that scores
    missing = [c for c in reward_columns(reward) if c not in columns]
    if missing:
        getattr(reward, "close", lambda: None)()
        options = " ".join("--answer GOLD" if c == "answer" else f"--column {c}=VALUE" for c in missing)
        raise ValueError(f"reward {reward.__name__!r} reads {missing}: to score, give {options}")
    return reward


if __name__ == "__main__":
    sys.exit(main())

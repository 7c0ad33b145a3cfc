"""Evaluation on a task's eval split: ``python -m grpo_ext.evaluate task=NAME model.path=DIR [eval.k=8]``.

For each of the first ``eval.size`` eval prompts: one greedy completion, scored by the task's first reward, and, with
``eval.k`` > 1, ``k`` sampled completions at ``eval.temperature``. Reported: ``accuracy`` (greedy pass@1: the
reward's full score), ``pass@k`` (any of the k samples fully right), ``format`` (the share of greedy completions that
state an answer or code at all, for rewards that say so), and ``reward`` (the mean greedy reward). The report goes to
``eval_report.json`` in the output directory (with every greedy completion and its score) and a table to the console.
The same function runs inside training (``EvalCallback``): before the first step, every ``eval.every`` steps and at
the end, its figures logged as ``eval/accuracy``, ``eval/format``, ``eval/reward`` and ``eval/pass@k``.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpo_ext.rewards import score_results
from grpo_ext.rewards.guard import RewardFailureError, check_values

log = logging.getLogger("grpo_ext.evaluate")

# Reward statuses meaning "the completion never stated an answer (or code)": what format accuracy counts.
FORMAT_FAILURES = {"no_answer", "malformed_answer", "multiple_answers", "no_code", "too_long"}


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[Any],
    *,
    max_new_tokens: int,
    samples: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float | None = None,
    batch_size: int = 64,
) -> list[list[Completion]]:
    """Completions of chat (or plain) ``prompts``: one greedy each (``samples=0``), or ``samples`` sampled each (at
    ``temperature``, ``top_p``, ``top_k``, ``min_p``; not the model's own generation config)."""
    import torch

    texts = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) if isinstance(p, list) else p
        for p in prompts
    ]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # restored below: a trainer may share it
    per_prompt = max(samples, 1)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p}
    sampling = sampling if samples else {"do_sample": False}
    was_training = model.training
    model.eval()
    out: list[list[Completion]] = []
    try:
        for start in range(0, len(texts), max(1, batch_size // per_prompt)):
            chunk = texts[start : start + max(1, batch_size // per_prompt)]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=per_prompt,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
            generated = [
                _until_eos(row.tolist(), tokenizer.eos_token_id) for row in ids[:, batch["input_ids"].shape[1] :]
            ]
            decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
            made = [Completion(text, row) for text, row in zip(decoded, generated, strict=True)]
            out += [made[i : i + per_prompt] for i in range(0, len(made), per_prompt)]
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return out


class Completion(str):
    """A generated completion: its text (special tokens skipped), which is what every caller reads, carrying
    ``ids``, the tokens generated up to and including the end-of-sequence token, which TRL hands a reward as
    ``completion_ids``."""

    ids: list[int]

    def __new__(cls, text: str, ids: list[int]) -> Completion:
        completion = super().__new__(cls, text)
        completion.ids = ids
        return completion

    def __getnewargs__(self) -> tuple[str, list[int]]:  # pickled whole, to a reward's worker process
        return str(self), self.ids


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    """``ids`` up to and including the first ``eos`` (what follows it is padding), as TRL masks a completion."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def first_rows(dataset: Any, size: int) -> Any:
    """The first ``size`` rows of ``dataset`` (0: all of it): the eval prompts that ``eval.size`` selects."""
    return dataset.select(range(min(size, len(dataset)))) if size else dataset


def evaluate(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward: Callable,
    *,
    size: int,
    k: int,
    temperature: float,
    batch_size: int,
    max_new_tokens: int,
    state: Any = None,
) -> dict[str, Any]:
    """Greedy accuracy, pass@k, format accuracy and mean reward on the first ``size`` rows (0: all) of ``dataset``;
    ``state``: the Trainer's, which a reward gets as ``trainer_state`` during training."""
    rows = first_rows(dataset, size)
    columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}
    full = float(getattr(reward, "full_reward", 1.0))
    started = time.monotonic()
    prompts = list(rows["prompt"])
    greedy = [c[0] for c in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size)]  # fmt: skip
    context = trl_arguments(prompts, greedy, tokenizer, state)
    results = score_tolerantly(reward, as_trl_passes(greedy, prompts[0]), columns, context)
    rewards = [r.get("reward") for r in results]
    scored = [r for r in rewards if r is not None]
    metrics: dict[str, Any] = {
        "n": len(rows),
        "accuracy": sum(r is not None and r >= full for r in rewards) / len(rows),
        "reward": sum(scored) / len(scored) if scored else float("nan"),
    }
    if all("status" in r for r in results if "error" not in r):  # a failed score counts as no answer
        metrics["format"] = sum(r.get("status", "error") not in FORMAT_FAILURES for r in results) / len(rows)
    if k > 1:
        sampled = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, samples=k,
                           temperature=temperature, batch_size=batch_size)  # fmt: skip
        texts = [c for group in sampled for c in group]
        repeated = {name: [v for v in values for _ in range(k)] for name, values in columns.items()}
        context = trl_arguments([p for p in prompts for _ in range(k)], texts, tokenizer, state)
        sample_rewards = [r.get("reward") for r in score_tolerantly(reward, as_trl_passes(texts, prompts[0]),
                                                                    repeated, context)]  # fmt: skip
        hits = [
            any(r is not None and r >= full for r in sample_rewards[i * k : (i + 1) * k]) for i in range(len(rows))
        ]
        metrics[f"pass@{k}"] = sum(hits) / len(rows)
    metrics["seconds"] = round(time.monotonic() - started, 2)
    examples = [{"completion": c, **r} for c, r in zip(greedy, results, strict=True)]
    return {"metrics": metrics, "examples": examples}


def as_trl_passes(completions: list[str], prompt: Any) -> list[Any]:
    """``completions`` as TRL hands them to a reward: after a chat ``prompt``, each as one assistant message
    (``[{"role": "assistant", "content": text}]``); after a plain one, the text. Scored as plain text after chat
    prompts, a reward written to TRL's contract (``c[0]["content"]``) failed on every completion of the first
    evaluation, which stopped the run before its first step."""
    if isinstance(prompt, list):
        return [[{"role": "assistant", "content": text}] for text in completions]
    return completions


def trl_arguments(prompts: list[Any], completions: list[str], tokenizer: Any, state: Any = None) -> dict[str, Any]:
    """What TRL gives a reward besides the completions and the dataset's columns, for a completion of each of
    ``prompts``: the prompts, ``completion_ids`` (the tokens ``generate`` produced; for text from elsewhere, the text
    tokenized again), ``trainer_state`` (the Trainer's during training, else a new one at step 0), and
    ``log_extra`` and ``log_metric``, which log nothing outside training. A reward that read any of them failed on
    every completion of the first evaluation, which stopped the run."""
    from transformers import TrainerState

    if all(isinstance(c, Completion) for c in completions):
        ids = [c.ids for c in completions]
    else:
        ids = tokenizer(completions, add_special_tokens=False)["input_ids"] if tokenizer is not None else None
    return {"prompts": prompts, "completion_ids": ids, "trainer_state": state or TrainerState(),
            "log_extra": _log_nothing, "log_metric": _log_nothing}  # fmt: skip


def _log_nothing(*args: Any, **kwargs: Any) -> None:
    """``log_extra`` and ``log_metric`` outside training: there is no completions table or step to log to."""


PER_COMPLETION = ("prompts", "completion_ids")  # the TRL arguments that hold one value per completion


def score_tolerantly(
    reward: Callable, completions: list[Any], columns: dict[str, list[Any]], trl: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``score_results``, with the tolerance training's ``reward_guard`` has: when the reward raises or returns
    what is not a number (or ``None``) for each completion, each completion is scored alone, and the ones that still
    fail score ``None`` (not accurate) with their ``error``, logged with the first traceback. Without it, one bad
    held-out completion ended a training run at its evaluation, which the same failure in a training batch does
    not. ``RewardFailureError`` when every completion fails: a broken reward, not a bad completion."""
    try:
        return _checked(score_results(reward, completions, columns, trl), len(completions))
    except Exception:  # noqa: BLE001 - scored one at a time below, where the failures are told apart
        pass
    results = []
    first = None
    for i, completion in enumerate(completions):
        try:
            one = {k: v[i : i + 1] if k in PER_COMPLETION and v is not None else v for k, v in (trl or {}).items()}
            results += _checked(score_results(reward, [completion], {k: [v[i]] for k, v in columns.items()}, one), 1)
        except Exception as err:  # noqa: BLE001 - this completion's failure, logged once below
            first = first or traceback.format_exc()
            results.append({"reward": None, "error": f"{type(err).__name__}: {err}"})
    failed = sum("error" in r for r in results)
    name = getattr(reward, "__name__", type(reward).__name__)
    if failed and failed == len(results):
        raise RewardFailureError(f"reward {name} failed on every one of the {failed} completions to score:\n{first}")
    if failed:
        log.warning("reward %s failed on %d of the %d completions to score, each scored None (not accurate); "
                    "the first failure:\n%s", name, failed, len(results), first)  # fmt: skip
    return results


def _checked(results: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``results`` when there is one per completion and each ``reward`` is a finite number or ``None``."""
    if len(results) != n:
        raise ValueError(f"returned {len(results)} values for {n} completions")
    check_values([r.get("reward") for r in results], n)
    return results


def table(metrics: dict[str, Any]) -> str:
    """The metrics as a two-column console table."""
    width = max(len(key) for key in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in metrics.items():
        shown = f"{value:.1%}" if key in ("accuracy", "format") or key.startswith("pass@") else f"{value:.4g}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def load_model(cfg: Any) -> tuple[Any, Any]:
    """The model ``cfg.model`` names (resolved as training would), on ``cfg.hardware.device``, and its tokenizer;
    ``ModelUnavailableError`` for weights that are NaN or infinite."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ext.backends import models

    path = models.resolve(cfg.model)
    dtype = models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(cfg.hardware.device)
    bad = models.non_finite(model)
    if bad:  # greedy decoding of NaN logits gives tokens all the same, and a score of 0 that says nothing of why
        raise models.ModelUnavailableError(
            f"the weights of {path} are not all finite: {bad}. It gives no meaningful completions; a model "
            f"{models.FROM_A_DIVERGED_RUN}"
        )
    return model, AutoTokenizer.from_pretrained(path)


def write_report(run_dir: Path, report: dict[str, Any], cfg: Any) -> Path:
    path = run_dir / "eval_report.json"
    header = {"task": cfg.task.name, "model": cfg.model.path or cfg.model.name, "eval": dict(cfg.eval)}
    path.write_text(json.dumps({**header, **report}, indent=2, ensure_ascii=False) + "\n")
    return path


def check_eval(node: Any) -> None:
    """Raise ``ValueError`` naming the ``eval`` key whose value is out of range."""
    for key, low in (("every", 0), ("size", 0), ("k", 1), ("batch_size", 1)):
        if getattr(node, key) < low:
            raise ValueError(f"eval.{key} must be >= {low}, got {getattr(node, key)}")
    if node.temperature <= 0:
        raise ValueError(f"eval.temperature must be > 0, got {node.temperature}")
    if node.max_new_tokens is not None and node.max_new_tokens < 1:
        raise ValueError(
            f"eval.max_new_tokens must be >= 1 (or null: task.max_completion_length), got {node.max_new_tokens}"
        )
    check_stop_on_drop("eval", node.stop_on_drop, "eval.every", node.every, node.during_training)
    ranked = ["accuracy", "reward"] + ([f"pass@{node.k}"] if node.k > 1 else [])
    if node.best_metric not in ranked:
        raise ValueError(
            f"eval.best_metric must be one of {ranked}, got {node.best_metric!r}"
            + (" (pass@K is measured with eval.k=K)" if node.best_metric.startswith("pass@") else "")
        )


def check_stop_on_drop(node: str, stop: bool, every_key: str, every: int, evaluating: bool) -> None:
    """Raise ``ValueError`` when ``NODE.stop_on_drop`` is asked of a run without evaluations between steps (every
    ``every_key`` steps while ``eval.during_training``), at which alone it can act, naming what to add."""
    if stop and not (every and evaluating):
        missing = [] if evaluating else ["eval.during_training=true"]
        missing += [] if every else [f"{every_key}=N (an evaluation every N steps)"]
        raise ValueError(
            f"{node}.stop_on_drop=true acts at the held-out evaluations between steps, and this run has none: add "
            + " ".join(missing)
        )


def run_eval(
    model: Any, tokenizer: Any, dataset: Any, reward: Callable, cfg: Any, state: Any = None
) -> dict[str, Any]:
    """``evaluate`` with the settings of the config's ``eval`` node."""
    node = cfg.eval
    return evaluate(
        model, tokenizer, dataset, reward, size=node.size, k=node.k, temperature=node.temperature,
        batch_size=node.batch_size, max_new_tokens=node.max_new_tokens or cfg.task.max_completion_length, state=state,
    )  # fmt: skip


def main() -> None:
    import sys

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from grpo_ext.backends.hardware import check_device, resolve_auto
    from grpo_ext.backends.models import ModelUnavailableError
    from grpo_ext.config.schema import register_configs
    from grpo_ext.rewards import build_rewards
    from grpo_ext.tasks import build_task, check_columns

    register_configs()

    @hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
    def _main(cfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        cfg = resolve_auto(cfg, list(HydraConfig.get().overrides.task))
        try:
            check_eval(cfg.eval)
            check_device(cfg.hardware)
            rewards, _ = build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))
        except ValueError as err:
            sys.exit(f"config error: {err}")
        try:
            splits = build_task(cfg.task)
            check_columns(splits.eval, rewards[:1], f"{cfg.task.name} eval split")  # the reward that scores
            model, tokenizer = load_model(cfg)
            report = run_eval(model, tokenizer, splits.eval, rewards[0], cfg)
        except ValueError as err:
            sys.exit(f"task error: {err}")
        except RewardFailureError as err:
            sys.exit(f"error: {err}")
        except ModelUnavailableError as err:
            sys.exit(f"model error: {err}")
        finally:
            for reward in rewards:
                getattr(reward, "close", lambda: None)()
        path = write_report(run_dir, report, cfg)
        print(f"{cfg.task.name} eval split, {report['metrics']['n']} prompts, reward {rewards[0].__name__}:")
        print(table(report["metrics"]))
        print(f"report: {path}")

    _main()


if __name__ == "__main__":
    main()

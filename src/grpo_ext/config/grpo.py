"""The run's ``trl.GRPOConfig``: the ``trainer`` node plus what the other nodes imply, checked before TRL is imported
(our checks name the ``trainer`` keys and what would work), then by TRL itself."""

from __future__ import annotations

import math
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo_ext.config.trainer_node import grpo_config_defaults, trainer_overrides
from grpo_ext.run import processes
from grpo_ext.tasks import mix


def split_batch(kwargs: dict[str, Any], micro_batch: int | None) -> dict[str, Any]:
    """The batch fields of ``kwargs`` (GRPOConfig arguments) rewritten so that at most ``micro_batch`` completions
    go through one forward and backward pass, the same batch in smaller pieces: ``per_device_train_batch_size``
    divided by a factor, ``gradient_accumulation_steps`` and ``steps_per_generation`` multiplied by it, so that an
    optimizer step and a generation batch hold as many completions as before. Empty when nothing changes."""
    if micro_batch is None:
        return {}
    if micro_batch < 1:
        raise ValueError(f"hardware.micro_batch must be a positive number of completions or null, got {micro_batch}")
    defaults = grpo_config_defaults()
    per_device = kwargs.get("per_device_train_batch_size", defaults["per_device_train_batch_size"])
    if micro_batch >= per_device:
        return {}
    if per_device % micro_batch:
        raise ValueError(
            f"hardware.micro_batch={micro_batch} must divide trainer.per_device_train_batch_size={per_device} "
            f"(for example {max(d for d in range(1, micro_batch + 1) if per_device % d == 0)})"
        )
    factor = per_device // micro_batch
    accumulation = kwargs.get("gradient_accumulation_steps", defaults["gradient_accumulation_steps"])
    split = {"per_device_train_batch_size": micro_batch, "gradient_accumulation_steps": accumulation * factor}
    if kwargs.get("generation_batch_size") is None:  # else TRL derives steps_per_generation from it
        split["steps_per_generation"] = (kwargs.get("steps_per_generation") or accumulation) * factor
    return split


def make_grpo_config(cfg: DictConfig, run_dir: str, reward_weights: list[float]) -> Any:
    """Build the run's ``trl.GRPOConfig``: the ``trainer`` node plus what the other nodes imply.

    The checks run here, before any model or data is loaded: ours first (``TRAINER_LIMITS``, the batch shape), which
    name the ``trainer`` keys and what would work, then TRL's own when ``GRPOConfig`` is built (incompatible
    options), which name its fields bare and so are prefixed with the ``trainer`` values they name.
    """
    from grpo_ext.backends.hardware import generation_settings
    from grpo_ext.backends.models import torch_dtype

    if cfg.hardware.name == "auto":
        raise ValueError(
            "hardware=auto is resolved by the command-line entry points (grpo_ext.backends.hardware.resolve_auto); "
            "name a profile (hardware=cpu, gpu_10gb, gpu_24gb, gpu_80gb, ...) when composing a config yourself"
        )
    if cfg.task.name == "mix" and not cfg.task.max_completion_length:  # composed, not yet validated
        mix.complete(cfg.task)
    kwargs = trainer_overrides(cfg.trainer)
    for key, value in generation_settings(cfg).items():  # the profile's generation path, unless set explicitly
        kwargs.setdefault(key, value)
    values = {**grpo_config_defaults(), **kwargs}
    check_trainer(values)
    check_batch_shape(values, processes.world_size())
    kwargs.update(split_batch(kwargs, cfg.hardware.micro_batch))
    kwargs.setdefault("output_dir", run_dir)
    kwargs.setdefault("run_name", f"{cfg.task.name}-{cfg.model.name}-{cfg.hardware.name}")
    sampler = OmegaConf.select(cfg, "sampler.name", default="uniform")
    if sampler != "uniform" or (cfg.task.name == "mix" and len(mix.weights(cfg.task)) > 1):
        kwargs.setdefault("shuffle_dataset", False)  # the rows come in the order the run chose (sampler, mixture)
        if sampler != "uniform" and kwargs["shuffle_dataset"]:
            raise ValueError(
                f"trainer.shuffle_dataset=true would shuffle the prompts sampler={sampler} draws; unset it"
            )
    if "reward_weights" not in kwargs:
        kwargs["reward_weights"] = reward_weights
    elif len(kwargs["reward_weights"]) != len(reward_weights):
        raise ValueError(
            f"trainer.reward_weights has {len(kwargs['reward_weights'])} values but task {cfg.task.name!r} has "
            f"{len(reward_weights)} rewards; set the weights in task.rewards[i].weight instead"
        )
    init_kwargs = kwargs.get("model_init_kwargs") or {}
    if isinstance(init_kwargs, dict):
        init_kwargs.setdefault("dtype", torch_dtype(cfg.model.dtype, cfg.hardware.dtype))
        kwargs["model_init_kwargs"] = init_kwargs
    from trl import GRPOConfig  # after our checks: importing TRL takes seconds, and their errors need it not

    try:
        args = GRPOConfig(**kwargs)
    except ValueError as err:  # TRL's own checks name its fields bare: say which trainer values they mean
        named = ", ".join(f"trainer.{key}={values[key]}" for key in _fields_named(str(err), values))
        raise ValueError(f"trl.GRPOConfig rejected {named or 'the trainer values'}: {err}") from err
    check_report_to(list(args.report_to or []))
    return args


def generation_batches(args: Any, rows: int) -> tuple[int, int]:
    """How many prompts each generation batch of a run with ``args`` (its GRPOConfig) holds, and how many such
    batches its steps use: for ``max_steps``, one more than the steps need (each batch serves
    ``steps_per_generation`` x ``num_iterations`` passes); else an epoch of ``rows`` prompts."""
    per_batch = args.generation_batch_size // args.num_generations
    if args.max_steps > 0:
        passes = args.max_steps * args.gradient_accumulation_steps
        return per_batch, -(-passes // (args.steps_per_generation * args.num_iterations)) + 1
    return per_batch, max(1, rows // per_batch)


def check_report_to(report_to: list[str]) -> None:
    """Raise ``ValueError`` naming ``trainer.report_to`` when it names a logging integration that transformers does
    not know or whose package is not installed: transformers itself fails on either only once the model is loaded,
    with a traceback."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    installed = get_available_reporting_integrations()
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ValueError(
                f"trainer.report_to names {name!r}, which transformers does not know; it knows "
                f"{sorted(INTEGRATION_TO_CALLBACK)}, and 'all' (every one installed) or 'none'"
            )
        if name not in installed:
            raise ValueError(
                f"trainer.report_to names {name!r}, whose package is not installed here (installed: {installed}); "
                "install it or leave it out"
            )


def _fields_named(message: str, values: dict[str, Any]) -> list[str]:
    """The keys of ``values`` (multi-word field names, so that no plain word matches) that ``message`` names, in the
    order it names them."""
    found = [(match.start(), key) for key in values if "_" in key and (match := re.search(rf"\b{key}\b", message))]
    return [key for _, key in sorted(found)]


# Values TRL accepts when the config is built but that fail later, deep in torch or transformers once the model is
# loaded (a negative learning rate, a zero batch), or that train nothing without a word (num_iterations=0).
TRAINER_LIMITS = (
    ("learning_rate", ">= 0", lambda v: v >= 0),
    ("per_device_train_batch_size", ">= 1", lambda v: v >= 1),
    ("gradient_accumulation_steps", ">= 1", lambda v: v >= 1),
    ("num_iterations", ">= 1", lambda v: v >= 1),
    ("num_generations", ">= 2: GRPO scores each completion against the others for its prompt", lambda v: v >= 2),
    ("max_completion_length", ">= 1 (tokens)", lambda v: v is None or v >= 1),
    ("temperature", "> 0: GRPO samples its completions", lambda v: v > 0),
    ("top_p", "in (0, 1]", lambda v: 0 < v <= 1),
    ("top_k", ">= 0 (0 turns top-k sampling off)", lambda v: v is None or v >= 0),
    ("min_p", "in [0, 1] or null", lambda v: v is None or 0 <= v <= 1),
    ("repetition_penalty", "> 0 (1.0: no penalty)", lambda v: v > 0),
    ("beta", ">= 0 (the KL coefficient; 0 drops the reference model)", lambda v: v >= 0),
    ("epsilon", ">= 0 (the clipping range)", lambda v: v >= 0),
    ("epsilon_high", ">= 0 or null (null: the same as epsilon)", lambda v: v is None or v >= 0),
    ("max_grad_norm", ">= 0 (0: no clipping)", lambda v: v is None or v >= 0),
    ("weight_decay", ">= 0", lambda v: v >= 0),
    ("seed", "in [0, 2**32 - 1] (seed=N sets it)", lambda v: 0 <= v < 2**32),  # numpy's range
)


def check_trainer(values: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``trainer.KEY``, its value and what is allowed, for the first of ``values`` (the
    ``GRPOConfig`` arguments, defaults included) outside ``TRAINER_LIMITS`` or not a finite number."""
    for key, allowed, ok in TRAINER_LIMITS:
        if key not in values:  # a field the installed TRL release does not have
            continue
        value = values[key]
        if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise ValueError(f"trainer.{key}={value} is not allowed: it must be {allowed}")
    if values.get("max_steps", 1) <= 0 and values.get("num_train_epochs", 1) <= 0:  # transformers trains 0 steps
        raise ValueError(
            f"trainer.num_train_epochs={values['num_train_epochs']} with trainer.max_steps={values['max_steps']} "
            "trains nothing: set trainer.max_steps to a number of steps, or num_train_epochs > 0"
        )


def check_batch_shape(values: dict[str, Any], world_size: int) -> None:
    """Raise ``ValueError`` naming the ``trainer`` keys involved when a batch cannot hold whole prompt groups.

    GRPO samples ``num_generations`` completions per prompt and scores each against its group, so every generation
    batch (``per_device_train_batch_size`` x processes x ``steps_per_generation``, which defaults to
    ``gradient_accumulation_steps``; or ``generation_batch_size``) must be a whole number of groups. TRL checks the
    same when ``GRPOConfig`` is built, in its own field names and without saying what would work; this says both.
    ``values``: the ``GRPOConfig`` arguments with the defaults filled in, before ``hardware.micro_batch`` splits
    them (the split keeps the generation batch).
    """
    groups = values["num_generations"]  # >= 2: check_trainer has run
    per_device = values["per_device_train_batch_size"]
    per_pass = per_device * world_size
    passes = f"trainer.per_device_train_batch_size={per_device}" + (
        f" x {world_size} training processes" if world_size > 1 else ""
    )
    if values.get("generation_batch_size") is not None:
        if values.get("steps_per_generation") is not None:
            raise ValueError(
                "trainer.generation_batch_size and trainer.steps_per_generation cannot both be set: each is derived "
                "from the other; set one"
            )
        batch = values["generation_batch_size"]
        if batch % per_pass:
            raise ValueError(
                f"trainer.generation_batch_size={batch} must be a multiple of the completions of one pass, "
                f"{passes}" + (f" = {per_pass}" if world_size > 1 else "")
            )
        if batch % groups:
            fix = f"trainer.generation_batch_size={_next_multiple(batch, math.lcm(per_pass, groups))}"
            raise ValueError(_not_whole_groups(f"trainer.generation_batch_size={batch}", batch, groups, fix))
    else:
        steps_key = "steps_per_generation" if values.get("steps_per_generation") else "gradient_accumulation_steps"
        steps = values[steps_key]
        batch = per_pass * steps
        if batch % groups:
            multiple = groups // math.gcd(groups, world_size * steps)  # of which per_device_train_batch_size must be
            fix = f"trainer.per_device_train_batch_size={_next_multiple(per_device, multiple)}"
            source = passes + (f" x trainer.{steps_key}={steps}" if steps > 1 else "")
            source += f" = {batch}" if batch != per_device else ""
            raise ValueError(_not_whole_groups(source, batch, groups, fix))
    if values.get("eval_strategy", "no") != "no":
        eval_groups = values.get("num_generations_eval") or groups
        eval_batch = values["per_device_eval_batch_size"] * world_size
        if eval_batch % eval_groups:
            raise ValueError(
                f"trainer.per_device_eval_batch_size={values['per_device_eval_batch_size']}"
                + (f" x {world_size} training processes" if world_size > 1 else "")
                + f" must hold whole groups of {eval_groups} completions (trainer.num_generations_eval, else "
                "trainer.num_generations) for TRL's evaluation"
            )


def _next_multiple(value: int, step: int) -> int:
    """The smallest multiple of ``step`` that is at least ``value`` (and at least ``step``)."""
    return step * max(1, -(-value // step))


def _not_whole_groups(source: str, batch: int, groups: int, fix: str) -> str:
    """The message for a generation batch of ``batch`` completions (from ``source``) that is not whole groups."""
    fitting = [n for n in range(2, batch + 1) if batch % n == 0]
    other = f" or trainer.num_generations one of {fitting}" if fitting else ""
    return (
        f"the generation batch, {source} completions, must hold whole groups of trainer.num_generations={groups} "
        f"completions per prompt; for example {fix}{other}"
    )

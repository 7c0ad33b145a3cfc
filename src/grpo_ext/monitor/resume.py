"""A resumed run's optimizer settings: its own, not those saved in the checkpoint it resumes from."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


class OptimizerSettingsOnResume(TrainerCallback):
    """Give a resumed run the optimizer settings it is run with, not those saved in its checkpoint.

    Resuming, the Trainer loads the optimizer's and the scheduler's state from the checkpoint, and with them the
    hyperparameters they were saved with: a run resumed from a checkpoint (``resume=CHECKPOINT``) with another
    learning rate, weight decay, or Adam's betas or epsilon trained on with the checkpoint's, silently (the advice
    after a divergence, to resume with a smaller learning rate, changed nothing). At the start of a resumed run,
    this sets them back to the run's own, where the optimizer is the Trainer's own: the learning rate by rescaling
    the schedule (its base rate, and each parameter group's current rate, so the schedule keeps its place), the others
    as they are. Each change is logged; one that cannot be made is a warning. ``prefix`` is where the user sets them
    (``trainer.``, ``sft.``).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if state.global_step == 0 or optimizer is None:
            return
        groups = optimizer.param_groups
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper holds torch's
        changed = self._learning_rate(args.learning_rate, groups, scheduler)
        if "adam" in str(args.optim).lower():
            adam = {
                "betas": ("adam_beta1/adam_beta2", (args.adam_beta1, args.adam_beta2)),
                "eps": ("adam_epsilon", args.adam_epsilon),
            }
            for key, (name, value) in adam.items():
                old = groups[0].get(key)
                if old is not None and _floats(old) != _floats(value):
                    for group in groups:
                        group[key] = value
                    changed.append(f"{self.prefix}{name} {old} -> {value}")
        decaying = [group for group in groups if group.get("weight_decay")]
        if decaying and decaying[0]["weight_decay"] != args.weight_decay:
            changed.append(f"{self.prefix}weight_decay {decaying[0]['weight_decay']} -> {args.weight_decay}")
            for group in decaying:
                group["weight_decay"] = args.weight_decay
        elif not decaying and args.weight_decay:
            logger.warning(
                "%sweight_decay=%s is not applied: the checkpoint's optimizer decays no parameter, and which ones "
                "would is not recorded in it; start a new run for weight decay",
                self.prefix,
                args.weight_decay,
            )
        if changed:
            logger.info("resumed with this run's optimizer settings, not the checkpoint's: %s", "; ".join(changed))

    def _learning_rate(self, lr: float, groups: list[dict[str, Any]], scheduler: Any) -> list[str]:
        base = list(getattr(scheduler, "base_lrs", None) or [group.get("initial_lr", group["lr"]) for group in groups])
        if len(set(base)) != 1:  # groups of their own rates: not the Trainer's optimizer
            if not math.isclose(max(base), lr):
                logger.warning(
                    "%slearning_rate=%s is not applied: the checkpoint's optimizer has parameter groups with "
                    "learning rates of their own (%s)",
                    self.prefix,
                    lr,
                    base,
                )
            return []
        before = [group["lr"] for group in groups]
        if hasattr(scheduler, "lr_lambdas"):  # the Trainer's schedules: this place of this run's schedule
            current = [lr * fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
        else:
            current = [rate * lr / base[0] for rate in before]
        if math.isclose(base[0], lr) and all(math.isclose(a, b) for a, b in zip(before, current, strict=True)):
            return []
        for group, rate in zip(groups, current, strict=True):
            group["lr"] = rate
            if "initial_lr" in group:
                group["initial_lr"] = lr
        if hasattr(scheduler, "base_lrs"):  # what the scheduler scales from now on, and what the Trainer logs
            scheduler.load_state_dict({**scheduler.state_dict(), "base_lrs": [lr] * len(base), "_last_lr": current})
        now = f"this step's rate {before[0]:.3g} -> {current[0]:.3g}"
        if math.isclose(base[0], lr):  # the same rate, on a schedule of another length (trainer.max_steps)
            return [f"the learning rate schedule's: {now}"]
        return [f"{self.prefix}learning_rate {base[0]:.3g} -> {lr:.3g} ({now})"]


def _floats(value: Any) -> tuple[float, ...]:
    """A hyperparameter (a float, a tuple of them, or tensors) as a tuple of floats, to compare."""
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)

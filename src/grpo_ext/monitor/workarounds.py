"""Work-arounds for faults in the libraries under TRL, each to be removed when its fault is fixed there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments


class OneInputGradHook(TrainerCallback):
    """Remove the copies of transformers' input-embedding hook that pile up during training; keep one.

    With activation checkpointing, TRL turns it off to generate and on again after
    (``trl.models.unwrap_model_for_generation``), and each time transformers (5.x) registers one more
    ``make_inputs_require_grads`` forward hook on the input embeddings without removing the old ones (it removes
    them only for a PEFT config loaded through transformers). Measured here with TRL 1.16 and transformers 5.24: two
    more hooks each step, with or without LoRA, so that by step 1,000 every forward pass, each decode step of
    generation included, runs 2,000 identical hooks (+2 ms a forward pass of the tiny model on this CPU), and a
    compiled decode step (``hardware.rollout=static_cache``), guarded on the number of hooks, is compiled again every
    step until torch's recompile limit sends it back to uncompiled decoding. The hooks all set
    ``requires_grad`` on the embeddings' output, so one does what all of them did.
    """

    HOOK = "make_inputs_require_grads"

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        self.prune(model)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        self.prune(model)

    @classmethod
    def prune(cls, model: Any) -> int:
        """Keep the newest of the copies on each module of ``model``; return how many were removed."""
        removed = 0
        for module in model.modules() if model is not None else ():
            hooks = module._forward_hooks  # torch keeps them in registration order, keyed by handle id
            copies = [key for key, hook in hooks.items() if getattr(hook, "__name__", None) == cls.HOOK]
            for key in copies[:-1]:
                del hooks[key]
                for table in (module._forward_hooks_with_kwargs, module._forward_hooks_always_called):
                    table.pop(key, None)
            removed += max(len(copies) - 1, 0)
        return removed

"""The run's ``trl.SFTConfig`` for ``grpo_ext.sft``: the ``sft`` node, with placement and precision from the hardware
profile, checked before TRL is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grpo_ext.backends import models
from grpo_ext.config.schema import check_stop_on_drop
from grpo_ext.config.trainer_node import RENAMED, with_current_names


def check_sft(node: Any, evaluating: bool) -> None:
    """Raise ``ValueError`` naming the ``sft`` key whose value is out of range, or that asks for what the
    evaluations (``evaluating``: ``eval.during_training``) cannot do."""
    for key in ("steps", "batch_size", "max_length", "save_steps", "logging_steps"):
        if getattr(node, key) < 1:
            raise ValueError(f"sft.{key} must be >= 1, got {getattr(node, key)}")
    if node.eval_every < 0:
        raise ValueError(f"sft.eval_every must be >= 0 (0: only before and after), got {node.eval_every}")
    check_stop_on_drop("sft", node.stop_on_drop, "sft.eval_every", node.eval_every, evaluating)
    if node.learning_rate <= 0:
        raise ValueError(f"sft.learning_rate must be > 0, got {node.learning_rate}")
    if not 0 <= node.warmup_fraction < 1:
        raise ValueError(f"sft.warmup_fraction must be in [0, 1), got {node.warmup_fraction}")


def sft_config(cfg: DictConfig, run_dir: Path) -> Any:
    """TRL's SFTConfig from the ``sft`` node, with placement and precision from the hardware profile."""
    from trl import SFTConfig

    node = cfg.sft
    kwargs = dict(
        output_dir=str(run_dir),
        max_steps=node.steps,
        per_device_train_batch_size=node.batch_size,
        learning_rate=node.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(node.warmup_fraction * node.steps),
        weight_decay=node.weight_decay,
        max_length=node.max_length,
        logging_steps=node.logging_steps,
        save_steps=node.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        use_cpu=cfg.trainer.use_cpu,
        bf16=cfg.trainer.bf16,
        fp16=cfg.trainer.fp16,
        **{name: cfg.trainer[name] for names in RENAMED for name in names if name in cfg.trainer},  # checkpointing
        report_to=["wandb"] if cfg.logger.name == "wandb" else [],
        run_name=f"sft-{cfg.task.name}-{cfg.model.name}",
        model_init_kwargs={"dtype": models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype)},
        disable_tqdm=cfg.trainer.disable_tqdm,
        dataloader_num_workers=0,
    )
    return SFTConfig(**with_current_names(kwargs))

"""External loggers. ``logger=wandb`` reports through TRL's own W&B integration; this module points it at the
right project and decides online or offline before the Trainer starts."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import sys
from pathlib import Path

from omegaconf import DictConfig

logger = logging.getLogger(__name__)

LOGGERS = ("none", "wandb")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """True when W&B has an API key: ``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def setup(cfg: DictConfig, run_dir: Path) -> str:
    """Configure the logger named by ``cfg`` for a run writing to ``run_dir``; return a line saying what it does."""
    if cfg.name not in LOGGERS:
        raise ValueError(f"logger.name must be one of {list(LOGGERS)}, got {cfg.name!r}")
    if cfg.name == "none":
        return "logger: none (metrics in metrics.jsonl only)"
    if cfg.mode not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {list(WANDB_MODES)}, got {cfg.mode!r}")
    mode = cfg.mode
    if mode == "auto":
        mode = "online" if has_wandb_credentials() else "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_PROJECT"] = cfg.project
    os.environ["WANDB_DIR"] = str(run_dir)
    if cfg.entity:
        os.environ["WANDB_ENTITY"] = cfg.entity
    if cfg.tags:
        os.environ["WANDB_TAGS"] = ",".join(cfg.tags)
    # One W&B run per run directory: a resumed run continues the same W&B run.
    id_file = run_dir / "wandb_run_id"
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(4) + "\n")
    os.environ["WANDB_RUN_ID"] = id_file.read_text().strip()
    os.environ["WANDB_RESUME"] = "allow"
    if mode == "offline":
        upload = f"wandb sync {run_dir}/wandb/offline-run-*"
        return f"logger: wandb offline (no credentials found); upload later with: {upload}"
    return f"logger: wandb {mode}, project {cfg.project}"


def finish() -> None:
    """Close the W&B run if one is open (its files are complete and ready for ``wandb sync``)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()

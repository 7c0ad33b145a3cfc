"""External loggers. With ``logger=wandb`` this module opens the W&B run itself (name, group, tags, job type, the
resolved config, an id kept in the run directory so that a resumed run continues it) and TRL's W&B integration logs
into it; without credentials the run is written offline, and no run ever fails because W&B is unreachable."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grpo_ext.run import processes
from grpo_ext.run.records import append_alert
from grpo_ext.run.rundir import RunDir

logger = logging.getLogger(__name__)

LOGGERS = ("none", "wandb")
WANDB_MODES = ("auto", "online", "offline", "disabled")
_TOLD = {"offline": False}
_OPEN: dict[str, Path | None] = {"run_dir": None}  # the run whose alerts are recorded (the main process's, once open)


def has_wandb_credentials() -> bool:
    """True when W&B has an API key: ``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check(cfg: DictConfig) -> str:
    """Validate the ``logger`` node; return the W&B mode the run will use (``none`` for logger=none)."""
    if cfg.name not in LOGGERS:
        raise ValueError(f"logger.name must be one of {list(LOGGERS)}, got {cfg.name!r}")
    if cfg.completions_every < 0:
        raise ValueError(f"logger.completions_every must be >= 0 (0: no tables), got {cfg.completions_every}")
    if cfg.name == "none":
        return "none"
    if cfg.mode not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {list(WANDB_MODES)}, got {cfg.mode!r}")
    if cfg.mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return cfg.mode


def start(
    cfg: DictConfig, args: Any, tags: list[str], group: str | None, config: dict[str, Any], job_type: str = "train"
) -> None:
    """Open the W&B run of ``args.output_dir`` (named ``args.run_name``) for ``logger=wandb``, and log what the run
    logs to. When W&B is not running (``logger=none``, another process's run, W&B could not start), it is dropped
    from ``args.report_to``: TRL's own W&B integration would otherwise open a run by itself, or fail without
    credentials."""
    _OPEN["run_dir"] = Path(args.output_dir) if processes.is_main() else None
    line, running = _open(cfg, Path(args.output_dir), args.run_name, tags, group, config, job_type)
    logger.info(line)
    if not running and args.report_to and "wandb" in args.report_to:
        args.report_to = [r for r in args.report_to if r != "wandb"]


def _open(
    cfg: DictConfig,
    run_dir: Path,
    name: str,
    tags: list[str],
    group: str | None,
    config: dict[str, Any],
    job_type: str,
) -> tuple[str, bool]:
    """Open the W&B run; return a line saying what the run logs to, and whether W&B is running."""
    mode = check(cfg)
    if mode == "none":
        return "logger: none (metrics in metrics.jsonl only)", False
    if not processes.is_main():  # one W&B run per run, opened by the main process
        return "logger: wandb, in the main process", False
    id_file = RunDir(run_dir).wandb_id  # one W&B run per run directory: a resumed run continues the same one
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(4) + "\n")
    import wandb

    try:
        wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            id=id_file.read_text().strip(),
            resume="allow",
            name=name,
            group=group,
            job_type=job_type,
            tags=list(dict.fromkeys([*cfg.tags, *tags])),
            config={"grpo_ext": config},
            dir=str(run_dir),
            mode=mode,  # type: ignore[arg-type]  # check() allows only wandb's modes
        )
    except Exception as err:  # noqa: BLE001 - W&B being unreachable must not cost the run
        logger.warning("W&B could not start (%s); going on with metrics.jsonl only", err)
        return "logger: wandb could not start; metrics in metrics.jsonl only", False
    if mode == "offline":
        if _TOLD["offline"]:  # said once per process: a sweep's later jobs get the short form
            return f"logger: wandb offline, in {run_dir}/wandb", True
        _TOLD["offline"] = True
        upload = f"wandb sync {run_dir}/wandb/offline-run-*"
        return f"logger: wandb offline (no credentials found); upload later with: {upload}", True
    return f"logger: wandb {mode}, project {cfg.project}, run {name}", True


def finish(stopped_by: int | None = None) -> None:
    """Close the W&B run if one is open (its files are complete and ready for ``wandb sync``), as failed (exit code
    1) when called while an exception is on its way out, or with ``128 + stopped_by`` when a signal stopped it, so
    that the dashboard never shows a crashed run as finished."""
    _OPEN["run_dir"] = None
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        failing = sys.exc_info()[1]
        if failing is not None and not (isinstance(failing, SystemExit) and failing.code in (None, 0)):
            wandb.finish(exit_code=1)
        else:
            wandb.finish(exit_code=0 if stopped_by is None else 128 + stopped_by)


def alert(title: str, text: str, level: str = "WARN", step: int | None = None) -> None:
    """What a long run's owner must hear of without watching it: recorded in ``RUN/alerts.jsonl`` (the run's closing
    summary and ``grpo_ext.summarize`` name it) and sent as a W&B alert on the open run (an email or Slack message,
    as the user's W&B settings say; recorded in an offline run). ``level``: INFO, WARN or ERROR; ``step``: the
    training step it concerns."""
    if _OPEN["run_dir"] is not None:
        try:
            append_alert(_OPEN["run_dir"], step, level, title, text)
        except OSError as err:  # a full disk: the log has the message, and the run's own writes will say it
            logger.warning("could not record the alert %r: %s", title, err)
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.run.alert(title=title, text=text[:1000], level=getattr(wandb.AlertLevel, level))
    except Exception as err:  # noqa: BLE001 - W&B failing must not cost the run
        logger.warning("could not send the W&B alert %r: %s", title, err)

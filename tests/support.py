"""What the tests share: the paths of the repository, the fast overrides, and helpers that compose a config as the
entry points do, run a command in a subprocess, train a scripted failure. The environment the tests run in (a model
cache of their own, W&B off, a Hub that refuses) is set by ``conftest.py`` before anything imports this module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from grpo_ext.backends import adapters
from grpo_ext.backends.hardware import resolve_auto
from grpo_ext.config.schema import register_configs
from grpo_ext.run.records import read_metrics

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CONF = REPO / "conf"
# The code sandbox's tests need bubblewrap (make setup installs it where apt is available).
needs_bwrap = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v bwrap"], capture_output=True).returncode != 0,
    reason="bubblewrap is not installed (make setup installs it where apt is available)",
)
# QLoRA runs here too when bitsandbytes (the dev extra) has CPU 4-bit kernels.
QLORA_HERE = adapters.importlib.util.find_spec("bitsandbytes") is not None and adapters.four_bit_on_cpu()

# Small and fast on 2 CPU cores; tests add what they need on top.
FAST = [
    "hardware=cpu",
    "logger=none",
    "trainer.max_steps=2",
    "trainer.num_generations=4",
    "trainer.per_device_train_batch_size=8",
    "trainer.max_completion_length=12",
    "trainer.dataloader_num_workers=0",
    "trainer.disable_tqdm=true",
    "trainer.save_strategy=no",
    "task.train_size=64",
    "task.eval_size=16",
    "eval.during_training=false",  # tests that look at evaluations turn it on
    "eval.size=4",
    "eval.max_new_tokens=12",
]

# arithmetic_shaping scores a random model 0 on every completion (it never writes <answer>), which leaves GRPO no
# advantage to learn from; a second reward that prefers short completions gives the group a spread.
WITH_SIGNAL = [
    "task.rewards=[{name: arithmetic_shaping}, {name: reward_fixtures.prefers_short, weight: 1.0}]",
    "trainer.learning_rate=1e-3",
]


def fresh_cache(tmp_path: Path) -> Path:
    """An empty model cache for a command that must build no model, holding only the session's ``trainer`` fields
    (so that composing its config needs no TRL import)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    from grpo_ext.backends.models import cache_root

    for fields in cache_root().glob("trainer_fields-*.json"):
        (cache / fields.name).write_bytes(fields.read_bytes())
    return cache


def compose_config(overrides: list[str] | None = None, resolve_hardware: bool = True):
    """Compose conf/config.yaml exactly as ``python -m grpo_ext.train`` would, with ``overrides`` (and, unless
    ``resolve_hardware`` is false, ``hardware=auto`` replaced by this machine's profile, as the entry points do)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides or []))
        return resolve_auto(cfg, list(overrides or [])) if resolve_hardware else cfg


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the run in ``run_dir`` (started as ``process``) has logged ``step``; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["step"] >= step for r in read_metrics(run_dir)):
            return
        assert process.poll() is None, process.communicate()[0][-2000:]
        time.sleep(0.02)
    raise AssertionError(f"step {step} never came")


def history(run_dir: Path) -> list[tuple]:
    """The training steps' (step, loss, reward), rounded (held-out evaluations have lines of their own)."""
    return [(r["step"], round(r["loss"], 6), round(r["reward"], 6)) for r in read_metrics(run_dir) if "loss" in r]


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str | None] | None = None):
    """Run ``python ARGS`` in a subprocess (``env`` values of ``None`` are removed); returns the CompletedProcess
    (text, both streams captured)."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def runs_out_of_memory(monkeypatch: pytest.MonkeyPatch, on_pass: int, message: str) -> None:
    """Make the tiny model's ``on_pass``-th training pass (grad on, training mode) raise CUDA's out-of-memory error
    with ``message``: there is no GPU here to run out of. TRL and transformers run the backbone (``Qwen2Model``)
    and the head apart, so the backbone is where every pass goes through."""
    from transformers.models.qwen2 import modeling_qwen2

    forward, passes = modeling_qwen2.Qwen2Model.forward, []

    def forward_that_runs_out(self, *args, **kwargs):
        if torch.is_grad_enabled() and self.training:
            passes.append(len(passes) + 1)
            if len(passes) == on_pass:
                raise torch.OutOfMemoryError(message)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(modeling_qwen2.Qwen2Model, "forward", forward_that_runs_out)


def tiny_model_with(tmp_path, change) -> str:
    """A copy of the tiny model in ``tmp_path/model`` whose weights ``change(model)`` has altered."""
    from transformers import AutoModelForCausalLM

    from grpo_ext.backends import models

    source = models.resolve(compose_config(["model=tiny"]).model)
    shutil.copytree(source, tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        change(model)
    model.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def zygote_module():
    """The sandbox worker's script (``rewards/_zygote.py``) loaded as a module, to test its helpers in this process."""
    import importlib.util  # noqa: PLC0415

    from grpo_ext.rewards import sandbox  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("_zygote_under_test", sandbox.ZYGOTE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

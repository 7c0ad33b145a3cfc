"""The tests' environment and shared fixtures. The helpers tests import (composing a config as the entry points do,
running a command, the fast overrides) are in ``support.py``; this module sets the environment before it is imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Before anything below is imported: a model cache of this process's own, so that the tiny model is built once and
# the user's own cache is never touched (importing grpo_ext.train already stores the trainer fields in it); W&B off
# unless a test turns it on; a Hub that refuses at once (huggingface_hub reads HF_ENDPOINT when imported), so that
# Hub code paths run for real and nothing is ever downloaded. Commands the tests start inherit all three. The rewards
# in tests/reward_fixtures.py are found as a user's module on PYTHONPATH would be, by the processes started here too
# (reward workers' forkserver among them).
SESSION_CACHE = tempfile.mkdtemp(prefix="grpo_ext_cache-")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
os.environ.update(
    GRPO_EXT_CACHE=SESSION_CACHE,
    WANDB_MODE="disabled",
    HF_ENDPOINT="http://127.0.0.1:9",
    PYTHONPATH=os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p),
)

from pathlib import Path

import pytest
import torch

import support


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the workers share the cores: each gets its share of threads, for torch in the worker and
    in the commands its tests start (which inherit the environment)."""
    config.add_cleanup(lambda: shutil.rmtree(SESSION_CACHE, ignore_errors=True))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture
def fresh_cache(tmp_path: Path) -> Path:
    """An empty model cache for a command that must build no model, holding only the session's ``trainer`` fields
    (so that composing its config needs no TRL import)."""
    return support.fresh_cache(tmp_path)


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The directory of the tiny model (random weights, byte tokenizer), built once for the session."""
    from grpo_ext.backends import models

    return models.resolve(support.compose_config(["model=tiny"]).model)

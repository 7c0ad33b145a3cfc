"""The ``logger`` node's checks: each bad value named with what is allowed, before anything starts."""

from __future__ import annotations

import pytest

from conftest import compose_config
from grpo_ext import loggers


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["logger.name=tensorboard"], "logger.name must be one of ['none', 'wandb'], got 'tensorboard'"),
        (["logger=wandb", "logger.mode=cloud"], "logger.mode must be one of ['auto', 'online', 'offline', 'disabled"),
        (["logger=none", "logger.completions_every=-1"], "logger.completions_every must be >= 0 (0: no tables)"),
    ],
)
def test_bad_logger_values_are_named(overrides, message):
    with pytest.raises(ValueError) as info:
        loggers.check(compose_config(overrides).logger)
    assert str(info.value).startswith(message)


def test_the_mode_a_run_will_use(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    assert loggers.check(compose_config(["logger=none"]).logger) == "none"
    assert loggers.check(compose_config(["logger=wandb", "logger.mode=offline"]).logger) == "offline"
    assert loggers.check(compose_config(["logger=wandb"]).logger) == "offline"  # auto, without credentials
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert loggers.check(compose_config(["logger=wandb"]).logger) == "online"

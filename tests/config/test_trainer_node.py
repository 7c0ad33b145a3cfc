"""The ``trainer`` node's fields, read from TRL once and then from the cache: the same schema either way, read
again whenever what it was read from changes, and the commands that only compose a config never import TRL."""

from __future__ import annotations

import dataclasses
import json

import pytest
from omegaconf import OmegaConf
from trl import GRPOConfig

from grpo_ext.config.trainer_node import (
    _decode_type,
    _node_type,
    _read_trainer_fields,
    _write_trainer_fields,
    schema_of,
)
from support import REPO, run_cli


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_EXT_CACHE", str(tmp_path))
    return tmp_path


def test_cached_fields_are_exactly_what_trl_says(cache):
    assert _read_trainer_fields() is None  # nothing cached yet
    from_trl = _write_trainer_fields()
    assert list(cache.glob("trainer_fields-*.json"))
    from_cache = _read_trainer_fields()
    assert from_cache == from_trl
    init_fields = [f for f in dataclasses.fields(GRPOConfig) if f.init]
    assert [name for name, _, _ in from_cache] == [f.name for f in init_fields]
    for (name, kind, _), f in zip(from_cache, init_fields, strict=True):
        assert _decode_type(kind) == _node_type(f.type), name
    fresh = OmegaConf.to_container(OmegaConf.structured(schema_of(from_trl)))
    cached = OmegaConf.to_container(OmegaConf.structured(schema_of(from_cache)))
    assert cached == fresh
    assert cached["include_for_metrics"] == [] and cached["learning_rate"] == GRPOConfig.learning_rate


def _edit_cache(cache, edit):
    path = next(cache.glob("trainer_fields-*.json"))
    stored = json.loads(path.read_text())
    edit(stored)
    path.write_text(json.dumps(stored))


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["key"].update(trl="0.0.1"),  # another TRL release
        lambda s: s["key"].update(transformers="4.0.0"),
        lambda s: next(iter(s["key"]["sources"].values())).__setitem__(0, 1),  # a source file changed since
        lambda s: s["key"]["sources"].update({"/no/such/file.py": [1, 1]}),  # ... or is gone
        lambda s: s["fields"][0].__setitem__(1, "complex"),  # a type this version does not know
        lambda s: s.pop("fields"),
    ],
    ids=["trl_version", "transformers_version", "source_changed", "source_gone", "unknown_type", "no_fields"],
)
def test_a_stale_or_broken_cache_is_read_from_trl_again(cache, edit):
    _write_trainer_fields()
    _edit_cache(cache, edit)
    assert _read_trainer_fields() is None
    _write_trainer_fields()
    assert _read_trainer_fields() is not None  # and stored again


def test_a_cache_that_is_not_json_is_read_from_trl_again(cache):
    _write_trainer_fields()
    next(cache.glob("trainer_fields-*.json")).write_text('{"key": {"tr')  # cut short
    assert _read_trainer_fields() is None


def test_an_unwritable_cache_still_gives_the_fields(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GRPO_EXT_CACHE", str(blocker / "cache"))  # a directory under a file: cannot exist
    assert [name for name, _, _ in _write_trainer_fields()][:1] == ["output_dir"]
    assert _read_trainer_fields() is None


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime``'s report."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.slow
def test_composing_a_config_imports_trl_only_until_its_fields_are_cached(tmp_path):
    env = {"GRPO_EXT_CACHE": str(tmp_path / "cache")}
    cmd = ["-X", "importtime", "-m", "grpo_ext.train", "--cfg", "job", "-p", "trainer.adam_beta2", "hardware=cpu"]
    first = run_cli(cmd, REPO, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip() == str(GRPOConfig.adam_beta2)
    assert "trl" in _imported(first.stderr)
    second = run_cli(cmd, REPO, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout == first.stdout
    imported = _imported(second.stderr)
    assert "grpo_ext.config.schema" in imported and "grpo_ext.config.trainer_node" in imported
    assert not imported & {"trl", "transformers", "peft", "bitsandbytes"}

    typo = run_cli(["-X", "importtime", "-m", "grpo_ext.train", "task=arithmtic"], REPO, env=env)
    assert typo.returncode == 1 and "Could not find 'task/arithmtic'" in typo.stderr
    assert "trl" not in _imported(typo.stderr)
    # our own checks of the trainer values come before TRL is imported for GRPOConfig's: 1.1 s, where it was 7.9
    for bad, said in [
        ("trainer.learning_rate=-1", "config error: trainer.learning_rate=-1.0 is not allowed: it must be >= 0"),
        ("trainer.num_generations=3", "must hold whole groups of trainer.num_generations=3 completions"),
    ]:
        result = run_cli(["-X", "importtime", "-m", "grpo_ext.train", "hardware=cpu", bad], REPO, env=env)
        assert result.returncode == 1 and said in result.stderr, result.stderr[-2000:]
        assert not _imported(result.stderr) & {"trl", "transformers"}, bad


def test_commands_that_read_runs_never_import_transformers():
    for module in ("grpo_ext.summarize", "grpo_ext.plot"):
        result = run_cli(["-X", "importtime", "-m", module, "--help"], REPO)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "transformers" not in _imported(result.stderr), module

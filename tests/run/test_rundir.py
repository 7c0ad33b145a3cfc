"""``run.rundir`` and ``errors``: the run directory's paths, its lock, whole-or-nothing writes, and the typed errors
the entry points report."""

from __future__ import annotations

import pytest

from grpo_ext.errors import ConfigError, GrpoExtError, Interrupted, RunDirBusy, TaskError, raised_as
from grpo_ext.run.rundir import RunDir, checkpoint_step, replace_whole


def test_a_run_directory_names_every_file_of_a_run(tmp_path):
    run = RunDir(tmp_path)
    assert RunDir(run) == run and str(run) == str(tmp_path)
    assert [p.name for p in (run.config, run.metrics, run.alerts, run.status, run.best_record)] == [
        "config.yaml", "metrics.jsonl", "alerts.jsonl", "status.json", "best.json",
    ]  # fmt: skip
    assert run.final_model == tmp_path / "final_model" and run.best_adapter == tmp_path / "best_adapter"
    assert run.checkpoint(40) == tmp_path / "checkpoint-40"


def test_checkpoints_are_found_by_step_not_by_name_order(tmp_path):
    for step in (100, 20, 3):
        RunDir(tmp_path).checkpoint(step).mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "checkpoint-7").write_text("a file, not a checkpoint")
    assert [checkpoint_step(p) for p in RunDir(tmp_path).checkpoint_dirs()] == [3, 20, 100]
    assert RunDir(tmp_path / "absent").checkpoint_dirs() == []


def test_a_second_run_in_a_locked_directory_is_refused_naming_the_first(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.locked():
        with pytest.raises(RunDirBusy, match=r"another run \(process \d+\) is using .*run; wait for it") as busy:
            with run.locked():
                pass
        assert busy.value.report().startswith("error: another run")
    with run.locked():  # released with the block
        pass


def test_a_whole_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "status.json"
    replace_whole(path, "one")
    replace_whole(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_each_kind_of_error_says_where_it_belongs():
    assert ConfigError("x=1 is not allowed").report() == "config error: x=1 is not allowed"
    assert TaskError("row 3 has no answer").report() == "task error: row 3 has no answer"
    stop = Interrupted("stopped by SIGTERM at step 3", 15)
    assert (stop.report(), stop.exit_code) == ("stopped by SIGTERM at step 3", 143)


def test_a_plain_check_s_failure_is_said_to_belong_to_its_part_of_the_run():
    with pytest.raises(TaskError, match="^bad row$"):
        with raised_as(TaskError):
            raise ValueError("bad row")
    with pytest.raises(ConfigError):  # an error that already says where it belongs keeps its kind
        with raised_as(TaskError):
            raise ConfigError("bad key")
    with pytest.raises(KeyError):  # what is not caught passes through
        with raised_as(TaskError):
            raise KeyError("x")
    assert issubclass(ConfigError, (GrpoExtError, ValueError))

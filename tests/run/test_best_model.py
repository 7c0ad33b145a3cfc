"""Keeping a run's best model: which evaluation wins, what is saved where, and that a kill, a resume or a finished
run continued loses nothing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from grpo_ext.backends import models
from grpo_ext.monitor import heldout
from grpo_ext.run.best_model import BestModel, best_line, read_best
from grpo_ext.train import train
from support import FAST, WITH_SIGNAL, compose_config


@pytest.fixture(scope="module")
def tiny():
    return AutoModelForCausalLM.from_pretrained(models.resolve(compose_config(["model=tiny"]).model))


class Saves:
    """The trainer's ``save_model`` as the callback sees it: saves a real model, and counts."""

    def __init__(self, model, fail: bool = False) -> None:
        self.model, self.fail, self.dirs = model, fail, []

    def __call__(self, target: str) -> None:
        self.dirs.append(target)
        self.model.save_pretrained(target)
        if self.fail:
            raise OSError(28, "No space left on device")


def acc(value: float) -> dict[str, float]:
    return {"eval/accuracy": value, "eval/format": 1.0}


def test_the_best_evaluation_wins_and_only_one_between_steps_is_saved(tmp_path, tiny):
    saves = Saves(tiny)
    best = BestModel(tmp_path, saves, adapter=False)
    best.offer(0, acc(0.25), final=False)
    assert read_best(tmp_path) == {"step": 0, "eval/accuracy": 0.25, "model": "start"} and not saves.dirs
    assert best_line(tmp_path).endswith("25.0% at step 0: the starting model (no later evaluation beat it)")
    best.offer(2, acc(0.25), final=False)  # a tie: the earlier evaluation stands
    assert read_best(tmp_path)["step"] == 0 and not saves.dirs

    best.offer(4, acc(0.5), final=False)
    assert read_best(tmp_path) == {"step": 4, "eval/accuracy": 0.5, "model": "best_model"}
    assert (tmp_path / "best_model" / "model.safetensors").is_file() and len(saves.dirs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best_model"]  # no .partial, no .old left
    best.offer(6, acc(0.375), final=False)
    assert read_best(tmp_path)["step"] == 4 and len(saves.dirs) == 1
    assert best_line(tmp_path) == f"best eval accuracy: 50.0% at step 4: {tmp_path / 'best_model'}"

    best.offer(8, acc(0.75), final=True)  # the final model is the best: saved by the run anyway, not twice
    assert read_best(tmp_path) == {"step": 8, "eval/accuracy": 0.75, "model": "final_model"}
    assert not (tmp_path / "best_model").exists() and len(saves.dirs) == 1
    assert best_line(tmp_path).endswith(f"at step 8: the final model, {tmp_path / 'final_model'}")


def test_a_save_that_fails_leaves_the_previous_best_whole(tmp_path, tiny):
    BestModel(tmp_path, Saves(tiny), adapter=False).offer(3, acc(0.5), final=False)
    before = load_file(tmp_path / "best_model" / "model.safetensors")
    with pytest.raises(OSError, match="No space left"):
        BestModel(tmp_path, Saves(tiny, fail=True), adapter=False).offer(5, acc(0.75), final=False)
    assert read_best(tmp_path)["step"] == 3
    after = load_file(tmp_path / "best_model" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "best_model.partial").exists()  # what the failed save left...
    BestModel(tmp_path, Saves(tiny), adapter=False)
    assert not (tmp_path / "best_model.partial").exists()  # ...is gone when the run starts again


def test_a_kill_between_the_two_renames_keeps_the_previous_best(tmp_path, tiny):
    BestModel(tmp_path, Saves(tiny), adapter=False).offer(3, acc(0.5), final=False)
    (tmp_path / "best_model").rename(tmp_path / "best_model.old")  # killed after moving the old best away
    best = BestModel(tmp_path, Saves(tiny), adapter=False)
    assert (tmp_path / "best_model" / "model.safetensors").is_file() and not (tmp_path / "best_model.old").exists()
    assert best.value == 0.5


def test_the_best_can_be_by_mean_reward_and_a_resume_by_another_metric_starts_anew(tmp_path, tiny, caplog):
    best = BestModel(tmp_path, Saves(tiny), adapter=False, metric="eval/reward")
    best.offer(0, {"eval/accuracy": 0.5, "eval/reward": 0.25}, final=False)
    best.offer(2, {"eval/accuracy": 0.25, "eval/reward": 0.625}, final=False)  # lower accuracy, higher reward
    best.offer(4, {"eval/accuracy": 0.75, "eval/reward": 0.5}, final=False)
    assert read_best(tmp_path) == {"step": 2, "eval/reward": 0.625, "model": "best_model"}
    assert best_line(tmp_path) == f"best eval reward: 0.625 at step 2: {tmp_path / 'best_model'}"
    lines = [{"step": s, "eval/accuracy": a} for s, a in ((0, 0.5), (2, 0.25), (4, 0.75))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    resumed = BestModel(tmp_path, Saves(tiny), adapter=False)  # by accuracy, the default
    assert "ranks models by eval/reward, and this run by eval/accuracy (eval.best_metric)" in caplog.text
    assert resumed.value == float("-inf")  # step 4's accuracy was never kept as a model: the next evaluation wins
    resumed.offer(6, acc(0.5), final=False)
    assert read_best(tmp_path) == {"step": 6, "eval/accuracy": 0.5, "model": "best_model"}


def test_a_resumed_run_must_beat_what_was_logged_before(tmp_path, tiny):
    lines = [{"step": 0, "eval/accuracy": 0.5}, {"step": 1, "reward": 0.1}, {"step": 2, "eval/accuracy": 0.25}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    best = BestModel(tmp_path, Saves(tiny), adapter=False)
    assert read_best(tmp_path) == {"step": 0, "eval/accuracy": 0.5, "model": "start"}
    best.offer(4, acc(0.375), final=False)
    assert not (tmp_path / "best_model").exists()


def test_a_best_from_history_the_resumed_run_no_longer_has_is_kept_and_said(tmp_path, tiny, caplog):
    """Resumed from checkpoint-2 (metrics cut back to step 2) when the best was at step 4: kept, with a warning."""
    (tmp_path / "best.json").write_text(json.dumps({"step": 4, "eval/accuracy": 0.75, "model": "best_model"}))
    lines = [{"step": 0, "eval/accuracy": 0.5}, {"step": 2, "eval/accuracy": 0.625}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    best = BestModel(tmp_path, Saves(tiny), adapter=False)
    said = f"the best so far, eval/accuracy 0.75 at step 4 ({tmp_path / 'best_model'}), is from history this run no"
    assert said in caplog.text
    assert best.value == 0.75
    caplog.clear()
    lines.append({"step": 4, "eval/accuracy": 0.75})  # the same history: nothing to say
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    BestModel(tmp_path, Saves(tiny), adapter=False)
    assert "no longer has" not in caplog.text


def test_a_finished_run_continued_keeps_its_final_model_as_the_best(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "final_model")
    (tmp_path / "best.json").write_text(json.dumps({"step": 8, "eval/accuracy": 0.75, "model": "final_model"}))
    best = BestModel(tmp_path, Saves(tiny), adapter=False)
    best.offer(8, acc(0.75), final=True)  # run again with the same steps: evaluated again, nothing trained
    assert read_best(tmp_path)["model"] == "final_model" and not (tmp_path / "best_model").exists()
    best.offer(10, acc(0.5), final=False)  # trained past its end: the new run will write another final_model
    assert read_best(tmp_path) == {"step": 8, "eval/accuracy": 0.75, "model": "best_model"}
    assert (tmp_path / "best_model" / "model.safetensors").is_file() and best.value == 0.75


def test_a_finished_run_continued_to_a_better_model_saves_only_that(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "final_model")
    (tmp_path / "best.json").write_text(json.dumps({"step": 8, "eval/accuracy": 0.75, "model": "final_model"}))
    best = BestModel(tmp_path, Saves(tiny), adapter=False)
    best.offer(10, acc(0.875), final=True)
    assert read_best(tmp_path) == {"step": 10, "eval/accuracy": 0.875, "model": "final_model"}
    assert not (tmp_path / "best_model").exists()


def test_with_adapters_the_adapter_is_kept_and_a_stale_merge_removed(tmp_path, tiny):
    (tmp_path / "best_model").mkdir()  # the merge of an earlier best adapter
    best = BestModel(tmp_path, Saves(tiny), adapter=True)
    best.offer(2, acc(0.5), final=False)
    assert (tmp_path / "best_adapter" / "model.safetensors").is_file() and not (tmp_path / "best_model").exists()


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_a_run_keeps_the_model_of_its_best_evaluation(peft, tmp_path, monkeypatch, capsys):
    """Real training and real evaluations, with the accuracy each evaluation reports set by a script (a random tiny
    model scores 0 everywhere): the best is at step 2, the run ends at step 4. With LoRA the best adapter is kept
    and merged at the end, as the final one is."""
    script = {0: 0.25, 1: 0.5, 2: 0.75, 3: 0.5, 4: 0.25}
    real_eval = heldout.run_eval
    steps = []

    def scripted_eval(model, tokenizer, **kwargs):
        report = real_eval(model, tokenizer, **kwargs)
        step = len(steps)
        steps.append(step)
        return {**report, "metrics": {**report["metrics"], "accuracy": script[step]}}

    monkeypatch.setattr(heldout, "run_eval", scripted_eval)
    keep_all = ["trainer.save_strategy=steps", "trainer.save_steps=1", "trainer.save_total_limit=null"]
    overrides = [*FAST, *WITH_SIGNAL, *keep_all, "trainer.max_steps=4", "eval.during_training=true", "eval.every=1"]
    train(compose_config(["task=arithmetic", "model=tiny", *overrides, f"peft={peft}", "peft.r=4"]), tmp_path)

    assert steps == [0, 1, 2, 3, 4]
    assert read_best(tmp_path) == {"step": 2, "eval/accuracy": 0.75, "model": "best_model"}
    weights = "model.safetensors" if peft == "none" else "adapter_model.safetensors"
    kept = load_file(tmp_path / ("best_model" if peft == "none" else "best_adapter") / weights)
    at_2 = load_file(tmp_path / "checkpoint-2" / weights)
    assert kept.keys() == at_2.keys() and all(torch.equal(kept[k], at_2[k]) for k in kept)
    best = load_file(tmp_path / "best_model" / "model.safetensors")  # with LoRA: the merge, as final_model is
    final = load_file(tmp_path / "final_model" / "model.safetensors")
    assert best.keys() == final.keys()
    assert any(not torch.equal(best[k], final[k]) for k in best), "the weights did not move after step 2"
    assert (tmp_path / "best_model" / "tokenizer.json").is_file()  # loadable with model.path=RUN/best_model
    assert f"best eval accuracy: 75.0% at step 2: {tmp_path / 'best_model'}" in capsys.readouterr().out

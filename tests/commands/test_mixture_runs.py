"""Training, evaluating and warm-starting on a task mixture, end to end on the CPU with the tiny model."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from grpo_ext.run.records import read_metrics
from grpo_ext.sft import fine_tune
from grpo_ext.train import train
from support import FAST, compose_config

# The task's own sizes go to each part (FAST's task.* keys are the mixture node's own, which it does not use).
PART = ["train_size=64", "eval_size=16"]
SHORT = [o for o in FAST if not o.startswith("task.")]


def mixture(*parts: str, weights: str) -> list[str]:
    sizes = [f"task.parts.{part}.{setting}" for part in parts for setting in PART]
    return ["task=mix", f"task.of={weights}", *sizes]


def test_a_mixture_of_one_task_trains_step_for_step_as_the_task_alone(tmp_path):
    """Same rows, same order, same rewards: the metrics of two steps are the same to the last digit, the reward's
    under its part's name."""
    rewards = "[{name: arithmetic_shaping}, {name: reward_fixtures.prefers_short}]"
    alone = compose_config(["task=arithmetic", "model=tiny", *FAST, "trainer.learning_rate=1e-3",
                            f"task.rewards={rewards}"])  # fmt: skip
    mixed = compose_config([*mixture("arithmetic", weights="{arithmetic: 1}"), "model=tiny", *SHORT,
                            "trainer.learning_rate=1e-3", f"task.parts.arithmetic.rewards={rewards}"])  # fmt: skip
    train(alone, tmp_path / "alone")
    train(mixed, tmp_path / "mixed")
    renamed = {"rewards/arithmetic/arithmetic_shaping/mean": "rewards/arithmetic_shaping/mean",
               "rewards/arithmetic/prefers_short/mean": "rewards/prefers_short/mean"}  # fmt: skip
    one, two = ([r for r in read_metrics(tmp_path / name) if "loss" in r] for name in ("alone", "mixed"))
    assert len(one) == len(two) == 2
    compared = ("loss", "reward", "reward_std", "kl", "grad_norm", "completions/mean_length", "entropy",
                "rewards/arithmetic_shaping/mean", "rewards/prefers_short/mean")  # fmt: skip
    for a, b in zip(one, two, strict=True):
        b = {renamed.get(k, k): v for k, v in b.items()}
        assert {k: a[k] for k in compared} == {k: b[k] for k in compared}
        assert b["arithmetic/reward"] == pytest.approx(a["reward"])  # the part's training reward


def test_a_mixture_trains_each_part_by_weight_with_its_own_records(tmp_path, monkeypatch, capsys):
    """Per-part training rewards each logged step, per-part held-out evaluations and their weighted mean, the rows of
    each generation batch in the parts' shares, and a closing line per part."""
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("GRPO_EXT_TEST_SEEN", str(seen))
    cfg = compose_config([*mixture("arithmetic", "mathexpr", weights="{arithmetic: 3, mathexpr: 1}"), "model=tiny",
                          *SHORT, "trainer.max_steps=4", "eval.during_training=true", "eval.size=4",
                          "task.parts.arithmetic.rewards=[{name: reward_fixtures.records_expressions}]",
                          "task.parts.mathexpr.rewards=[{name: math}]"])  # fmt: skip
    train(cfg, tmp_path / "run")
    steps = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all("arithmetic/reward" in r for r in steps)  # 1.5 of 2 prompts a step: every step has arithmetic's
    assert sum("mathexpr/reward" in r for r in steps) == 2  # and every other step mathexpr's
    assert all("rewards/arithmetic/records_expressions/mean" in r for r in steps)
    evals = [r for r in read_metrics(tmp_path / "run") if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 4]
    for record in evals:
        weighted = (3 * record["eval/arithmetic/accuracy"] + record["eval/mathexpr/accuracy"]) / 4
        assert record["eval/accuracy"] == pytest.approx(weighted)
    # training's rows (8 completions a step: 2 prompts x 4) then the evaluations' (4 arithmetic prompts each)
    trained = seen.read_text().splitlines()[4 : 4 + 4 * 6]  # arithmetic rows of the 4 steps: 2 + 1 + 2 + 1 prompts
    assert len(set(trained)) <= 6 and Counter(trained).most_common(1)[0][1] == 4  # each prompt's group of 4
    out = capsys.readouterr().out
    assert re.search(r"^eval accuracy of arithmetic: .* \(step 0\) -> .* \(step 4\)", out, flags=re.M), out
    assert re.search(r"^eval accuracy of mathexpr: ", out, flags=re.M), out
    assert (tmp_path / "run" / "accuracy.png").is_file()


def test_a_warm_start_and_an_evaluation_on_a_mixture(tmp_path, capsys):
    overrides = [*mixture("arithmetic", "mathexpr", weights="{arithmetic: 1, mathexpr: 1}"), "model=tiny", *SHORT]
    fine_tune(compose_config([*overrides, "sft.steps=2", "sft.batch_size=8", "eval.during_training=true",
                              "eval.size=4"]), tmp_path / "sft")  # fmt: skip
    out = capsys.readouterr().out
    assert "SFT mix: eval accuracy:" in out and "eval accuracy of mathexpr:" in out
    from grpo_ext.evaluate import evaluate
    from grpo_ext.run.rundir import RunDir

    cfg = compose_config([*overrides, f"model.path={tmp_path / 'sft' / 'final_model'}", "eval.size=3"])
    (tmp_path / "eval").mkdir()  # Hydra's output directory
    evaluate(cfg, RunDir(tmp_path / "eval"))
    table = capsys.readouterr().out
    assert "reward arithmetic/arithmetic_shaping, mathexpr/math:" in table
    for key in ("arithmetic/accuracy", "mathexpr/accuracy", "accuracy"):
        assert re.search(rf"^{re.escape(key)} +\d+\.\d%$", table, flags=re.M), table


@pytest.mark.slow
def test_a_mixture_resumed_from_a_checkpoint_draws_the_rows_an_unbroken_run_draws(tmp_path):
    """Stopped after its checkpoint at step 2 (everything after it removed, as a kill leaves it), the run resumes and
    trains steps 3 and 4 on the same rows, to the same losses and rewards, as the run that was never stopped."""
    import shutil

    overrides = [*mixture("arithmetic", "mathexpr", weights="{arithmetic: 2, mathexpr: 1}"), "model=tiny", *SHORT,
                 "trainer.max_steps=4", "trainer.save_strategy=steps", "trainer.save_steps=2",
                 "task.parts.arithmetic.rewards=[{name: arithmetic_shaping}, {name: reward_fixtures.prefers_short}]",
                 "task.parts.mathexpr.rewards=[{name: math}, {name: reward_fixtures.prefers_short}]"]  # fmt: skip
    train(compose_config(overrides), tmp_path / "unbroken")
    shutil.copytree(tmp_path / "unbroken", tmp_path / "resumed", ignore=shutil.ignore_patterns("checkpoint-4"))
    shutil.rmtree(tmp_path / "resumed" / "final_model")
    for later in ("status.json", "best.json"):
        (tmp_path / "resumed" / later).unlink(missing_ok=True)
    train(compose_config(overrides), tmp_path / "resumed")
    keys = ("step", "loss", "reward", "arithmetic/reward", "rewards/mathexpr/math/mean")
    one, two = ([{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / name) if "loss" in r]
                for name in ("unbroken", "resumed"))  # fmt: skip
    assert [r["step"] for r in two] == [1, 2, 3, 4] and one == two


@pytest.mark.slow
def test_difficulty_measures_a_mixture_part_by_part(tmp_path):
    from support import run_cli

    result = run_cli(["-m", "grpo_ext.difficulty", *mixture("arithmetic", "mathexpr", weights="{arithmetic: 1, "
                      "mathexpr: 1}"), "task.parts.arithmetic.train_size=6", "task.parts.mathexpr.train_size=6",
                      "model=tiny", "hardware=cpu", "logger=none", "trainer.num_generations=2",
                      "trainer.max_completion_length=8", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mix train split, 12 prompts, 2 completions each:" in result.stdout
    assert re.search(r"^arithmetic: \d+ of 6 prompts", result.stdout, flags=re.M), result.stdout
    assert re.search(r"^mathexpr: pass rate \(first reward in full\):", result.stdout, flags=re.M), result.stdout
    assert f"each with its part (column task): {tmp_path / 'with_signal.jsonl'}" in result.stdout

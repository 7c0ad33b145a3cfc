"""``python -m grpo_ext.train``: end-to-end on CPU with the tiny model, and validation that fails in seconds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from safetensors.torch import load_file

from grpo_ext.backends import models
from grpo_ext.errors import GrpoExtError
from grpo_ext.run.records import read_metrics
from grpo_ext.train import train
from support import CONF, FAST, REPO, WITH_SIGNAL, compose_config, run_cli


def test_two_steps_on_cpu_write_metrics_and_change_the_weights(tmp_path):
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, *WITH_SIGNAL])
    train(cfg, tmp_path)

    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        for key in ("wall_time", "reward", "reward_std", "rewards/arithmetic_shaping/mean", "kl", "loss"):
            assert key in record, key
        assert "rewards/prefers_short/mean" in record and "completions/mean_length" in record
    assert records[1]["wall_time"] > records[0]["wall_time"] > 0

    initial = load_file(f"{models.resolve(cfg.model)}/model.safetensors")
    final = load_file(tmp_path / "final_model" / "model.safetensors")
    assert initial.keys() == final.keys()
    assert any(not torch.equal(initial[k], final[k]) for k in initial), "training did not change any weight"

    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.trainer.max_completion_length == 12 and saved.task.name == "arithmetic"
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 2


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_trains_a_step(experiment, tmp_path, monkeypatch):
    overrides = [*FAST, "trainer.max_steps=1"]
    if experiment == "word_count_proof":  # rows from examples/word_count_rows.py, the reward from examples/
        rows = tmp_path / "rows"
        subprocess.run([sys.executable, str(REPO / "examples" / "word_count_rows.py"), str(rows), "--train", "64",
                        "--eval", "16"], check=True, capture_output=True)  # fmt: skip
        overrides += [f"task.path={rows / 'train.jsonl'}", f"task.eval_path={rows / 'eval.jsonl'}"]
        monkeypatch.syspath_prepend(str(REPO))
    cfg = compose_config([f"experiment={experiment}", *overrides])
    own = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"))
    overridden = {o.split("=", 1)[0] for o in overrides}
    for node in ("task", "trainer", "sft", "eval"):  # the experiment's values win over the groups' (not over the CLI)
        for key, value in (own.get(node) or {}).items():
            if f"{node}.{key}" not in overridden:
                assert _holds(OmegaConf.to_container(cfg[node])[key], value), f"{node}.{key}"
    train(cfg, tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    assert (tmp_path / "final_model" / "config.json").is_file()


def _holds(actual, given) -> bool:
    """``actual`` has what ``given`` sets: the same values, where dicts may hold fields ``given`` leaves to defaults
    (a reward entry's ``weight``, ``params``...)."""
    if isinstance(given, dict):
        return isinstance(actual, dict) and all(k in actual and _holds(actual[k], v) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(actual, list) and len(actual) == len(given) and all(map(_holds, actual, given))
    return actual == given


@pytest.mark.slow
def test_cli_run_from_another_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        ["-m", "grpo_ext.train", "task=arithmetic", "model=tiny", *FAST, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    assert (run_dir / "final_model" / "config.json").is_file()
    assert "run directory:" in result.stdout


def test_help_lists_the_config_groups(tmp_path):
    result = run_cli(["-m", "grpo_ext.train", "--help"], cwd=tmp_path)
    assert result.returncode == 0
    for line in (
        "task: arithmetic",
        "hardware: auto, cpu, gpu, gpu2_vllm_server, gpu_10gb, gpu_24gb, gpu_80gb, multigpu",
        "peft: lora, none, qlora",
        "algorithm: dapo, dr_grpo, grpo",
        "logger: none, wandb",
    ):
        assert line in result.stdout
    assert "trainer.FIELD=VALUE" in result.stdout


def test_cfg_job_prints_one_value(tmp_path):
    result = run_cli(["-m", "grpo_ext.train", "--cfg", "job", "-p", "trainer.beta", "algorithm=dr_grpo"], cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "0.0"


def no_model_built(cache) -> bool:
    return not (cache / "models").exists() or not any((cache / "models").iterdir())


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["trainer.per_device_train_batch_size=3", "trainer.num_generations=2"],
            "config error: the generation batch, trainer.per_device_train_batch_size=3 completions, must hold whole "
            "groups of trainer.num_generations=2",
        ),
        (  # TRL's own checks, with the values given
            ["trainer.auto_find_batch_size=true"],
            "config error: trl.GRPOConfig rejected trainer.auto_find_batch_size=True",
        ),
        (
            ["task.rewards=[{name: nope}]"],
            "config error: task.rewards[0]: unknown reward 'nope'; valid names: ['arithmetic_shaping', 'math', "
            "'python_exec', 'reasoning_gym']",
        ),
        (["task.ops=[/]"], "task error: task.ops[0] is '/'"),
        (["trainer.learning_rate=-1"], "config error: trainer.learning_rate=-1.0 is not allowed: it must be >= 0"),
        (["model.dtype=int8"], "config error: model.dtype must be one of ['auto', 'float32', 'bfloat16', 'float16']"),
    ],
)
def test_bad_config_fails_before_any_model_is_built(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setenv("GRPO_EXT_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(["model=tiny", "logger=none", *overrides])
    with pytest.raises(GrpoExtError) as stop:
        train(cfg, tmp_path / "run")
    assert message in stop.value.report()
    assert no_model_built(tmp_path / "cache")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.lerning_rate=1"], "Key 'lerning_rate' not in 'TrainerConfig'"),  # Hydra composition
        (["task=fizzbuz"], "Could not find 'task/fizzbuz'"),
    ],
)
def test_bad_command_line_fails_before_any_model_is_built(fresh_cache, tmp_path, overrides, message):
    cache = fresh_cache
    result = run_cli(
        ["-m", "grpo_ext.train", "model=tiny", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=tmp_path,
        env={"GRPO_EXT_CACHE": str(cache)},
    )
    assert result.returncode != 0 and message in result.stderr
    assert no_model_built(cache)


@pytest.mark.slow
def test_unreachable_hub_model_fails_with_the_alternatives(tmp_path):
    result = run_cli(
        ["-m", "grpo_ext.train", "model=qwen2.5-0.5b-instruct", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env={"HF_HUB_CACHE": str(tmp_path / "hub")},
    )
    assert result.returncode != 0
    assert "model=tiny" in result.stderr and "model.path=/local/dir" in result.stderr


def test_fizzbuzz_trains_with_the_sandboxed_reward(tmp_path):
    cfg = compose_config(["task=fizzbuzz", "model=tiny", *FAST, "task.train_size=40", "task.eval_size=8"])
    train(cfg, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    assert all("rewards/python_exec/mean" in r for r in records)


def test_the_input_embedding_hook_does_not_pile_up_and_adapters_still_learn(tmp_path):
    """With activation checkpointing, each generation turns it off and on, and transformers adds one more
    ``make_inputs_require_grads`` hook each time; ``OneInputGradHook`` (installed by ``train``) keeps one, which
    is still enough for LoRA's gradients to flow through the checkpointed layers."""
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo_ext.monitor.workarounds import OneInputGradHook

    counts = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            counts.append(len(model.get_input_embeddings()._forward_hooks))

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                      max_steps=3, per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
                      learning_rate=1e-2, gradient_checkpointing=True, logging_steps=1)  # fmt: skip
    trainer = GRPOTrainer(
        model=models.resolve(compose_config(["model=tiny"]).model),
        reward_funcs=[lambda completions, **_: [float(len(c) % 3) for c in completions]],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["1 + 2 =", "3 * 4 ="] * 8}),
        peft_config=LoraConfig(r=4, target_modules="all-linear"),
        callbacks=[OneInputGradHook(), Count()],
    )
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    trainer.train()
    assert counts == [1, 1, 1]
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before), "the adapters did not change"


def test_micro_batches_train_as_the_whole_batch_does(tmp_path):
    """hardware.micro_batch=2 puts 2 completions through each pass instead of 8: the same completions, rewards and
    losses, and the same weights up to float rounding."""
    runs = []
    for name, extra in (("whole", []), ("split", ["hardware.micro_batch=2"])):
        cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, *WITH_SIGNAL, *extra])
        train(cfg, tmp_path / name)
        weights = load_file(tmp_path / name / "final_model" / "model.safetensors")
        runs.append((read_metrics(tmp_path / name), weights))
    (whole, whole_weights), (split, split_weights) = runs
    assert [r["reward"] for r in whole] == [r["reward"] for r in split]
    assert [r["loss"] for r in whole] == pytest.approx([r["loss"] for r in split], abs=1e-6)
    initial = load_file(f"{models.resolve(cfg.model)}/model.safetensors")
    assert max((whole_weights[k] - initial[k]).abs().max().item() for k in initial) > 1e-3  # it did train
    assert max((whole_weights[k] - split_weights[k]).abs().max().item() for k in initial) < 1e-4


def test_a_run_that_logged_nothing_still_ends_well(tmp_path, capsys):
    """trainer.logging_steps past the last step and no evaluations: no metrics.jsonl at all, which the closing
    summary, the plots and the run's status must take (the summary used to fail on the missing file after the
    final model was saved, recording a finished run as failed)."""
    train(compose_config(["task=arithmetic", "model=tiny", *FAST, "trainer.logging_steps=10"]), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists() and (tmp_path / "final_model" / "config.json").is_file()
    assert f"run directory: {tmp_path} (no training step was logged)" in capsys.readouterr().out


@pytest.mark.slow
def test_steps_that_teach_nothing_and_completions_cut_off_are_named_once_a_stretch(tmp_path, caplog):
    """A random model never writes <answer>: every completion scores 0, every advantage is 0 (the README's run from
    random weights). Nor does it know to stop: nearly every completion runs to trainer.max_completion_length. After
    10 such steps the run says both, once each; a run with a signal does not say it has none."""
    steps = [o for o in FAST if not o.startswith("trainer.max_steps")]
    train(compose_config(["task=arithmetic", "model=tiny", *steps, "trainer.max_steps=12"]), tmp_path / "zero")
    warnings = [r.getMessage() for r in caplog.records if "no learning signal" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("no learning signal in steps 1-10: in every group of ")
    assert "Every completion of the last step got reward 0.000: the model may never write what" in warnings[0]
    cut = [r.getMessage() for r in caplog.records if "completions cut off" in r.getMessage()]
    assert len(cut) == 1 and cut[0].startswith(
        "completions cut off in steps 1-10: in each, at least 50% of the completions reached "
        "trainer.max_completion_length=12 tokens without ending"
    )
    assert all(r["completions/clipped_ratio"] >= 0.5 for r in read_metrics(tmp_path / "zero") if "loss" in r)
    caplog.clear()
    with_signal = ["task.rewards=[{name: reward_fixtures.prefers_short}]", "trainer.max_steps=12"]
    train(compose_config(["task=arithmetic", "model=tiny", *steps, *with_signal]), tmp_path / "signal")
    # (its completions are cut off too: the random model is slow to learn to stop, 75-100% cut in each of its 12
    # steps; tests/monitor/test_health.py has the runs that end in time)
    assert "no learning signal" not in caplog.text

"""Config composition: every YAML composes against its schema; typos and bad types fail at composition; the
``trainer`` node mirrors the installed TRL's GRPOConfig; presets and overrides land where they should."""

from __future__ import annotations

import dataclasses
import itertools
import re
import shlex
import warnings

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations
from trl import GRPOConfig

from grpo_ext.config.grpo import TRAINER_LIMITS, check_batch_shape, check_trainer, make_grpo_config
from grpo_ext.config.trainer_node import grpo_config_defaults, trainer_overrides
from support import CONF, REPO, compose_config


def group_options() -> dict[str, list[str]]:
    """Every config group under conf/ (recursively) and its choices, from the files themselves."""
    groups: dict[str, list[str]] = {}
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group != ".":
            groups.setdefault(group, []).append(path.stem)
    return groups


GROUPS = group_options()
# Values a task cannot run without (``???`` in its YAML), as a user would pass them.
REQUIRED = {  # the tasks whose YAML leaves keys for the command line
    "code_jsonl": [f"task.path={REPO / 'tests' / 'fixtures' / 'code_problems.jsonl'}"],
    "prompts": [f"task.path={REPO / 'examples' / 'word_count.jsonl'}", "task.rewards=[{name: arithmetic_shaping}]"],
    "mix": ["task.of={arithmetic: 3, mathexpr: 1}"],
    "reasoning_gym": ["task.datasets={chain_sum: {weight: 1}}"],
}


def task_overrides(task: str) -> list[str]:
    return [f"task={task}", *REQUIRED.get(task, [])]


def test_every_yaml_is_in_a_known_group_and_opens_with_its_command():
    assert set(GROUPS) == {
        "task",
        "model",
        "hardware",
        "peft",
        "logger",
        "algorithm",
        "sampler",
        "experiment",
        "hydra/sweeper",
        "hydra/launcher",
    }
    for path in CONF.rglob("*.yaml"):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("# @package")]
        assert lines[0].startswith("# python -m grpo_ext.train"), f"{path} should open with the command that uses it"
        if path.parent.name in ("sweeper", "launcher"):
            assert f"hydra/{path.parent.name}={path.stem}" in lines[0]


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_yaml_s_opening_command_composes(path):
    """The command a YAML opens with names only groups, choices and keys that exist."""
    line = next(line for line in path.read_text().splitlines() if not line.startswith("# @package"))
    argv = shlex.split(line.removeprefix("# python -m grpo_ext.train").split("  (")[0])
    overrides = [arg for arg in argv if arg != "-m" and not arg.startswith("hydra/")]  # sweepers: for Hydra's app
    if "-m" in argv:  # a sweep: each job composes with one of the values
        overrides = [arg.split(",")[0] for arg in overrides]
    compose_config(overrides, resolve_hardware=False)


# Every hardware profile with every adapter choice (hardware and peft do not touch the task's or the model's keys;
# every task with every model is composed by test_cpu_profile_builds_a_valid_grpo_config).
COMBINATIONS = [("arithmetic", "tiny", hw, peft) for hw, peft in itertools.product(GROUPS["hardware"], GROUPS["peft"])]


@pytest.mark.parametrize("task,model,hardware,peft", COMBINATIONS)
def test_every_task_model_hardware_combination_composes(task, model, hardware, peft):
    overrides = [*task_overrides(task), f"model={model}", f"hardware={hardware}", f"peft={peft}"]
    cfg = compose_config(overrides, resolve_hardware=False)
    assert (cfg.task.name, cfg.model.name, cfg.hardware.name, cfg.peft.name) == (task, model, hardware, peft)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # nothing left unset or unresolvable


@pytest.mark.parametrize("group", ["logger", "algorithm"])
def test_every_logger_and_algorithm_composes_and_builds_a_grpo_config(group, tmp_path):
    for choice in GROUPS[group]:
        cfg = compose_config([f"{group}={choice}", "hardware=cpu"])
        assert cfg[group].name == choice
        args = make_grpo_config(cfg, str(tmp_path), [1.0])
        assert isinstance(args, GRPOConfig)


@pytest.mark.parametrize("task,model", list(itertools.product(GROUPS["task"], GROUPS["model"])))
def test_cpu_profile_builds_a_valid_grpo_config(task, model, tmp_path):
    cfg = compose_config([*task_overrides(task), f"model={model}", "hardware=cpu"])
    assert (cfg.task.name, cfg.model.name) == (task, model)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # nothing left unset or unresolvable
    args = make_grpo_config(cfg, str(tmp_path), [1.0] * len(cfg.task.rewards))
    assert args.use_cpu and not args.bf16
    assert args.model_init_kwargs == {"dtype": "float32"}
    assert args.output_dir == str(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message seen on a machine without a GPU")
def test_gpu_profile_on_a_cpu_machine_fails_with_trl_message(tmp_path):
    cfg = compose_config(["hardware=gpu"])
    with pytest.raises(ValueError, match="doesn't support bf16/gpu"):
        make_grpo_config(cfg, str(tmp_path), [1.0])


def test_trainer_node_has_every_grpo_config_field_with_its_default():
    cfg = compose_config(["algorithm=dapo", "logger=none"])
    init_fields = [f for f in dataclasses.fields(GRPOConfig) if f.init]
    assert set(cfg.trainer) == {f.name for f in init_fields}
    untouched = {"learning_rate", "num_generations", "temperature", "top_p", "max_steps", "vllm_mode"}
    for f in init_fields:
        if f.name in untouched:
            assert cfg.trainer[f.name] == f.default, f.name


@pytest.mark.parametrize(
    "override,key,expected",
    [
        ("trainer.learning_rate=3e-5", "learning_rate", 3e-5),
        ("trainer.num_generations=4", "num_generations", 4),
        ("trainer.lr_scheduler_type=cosine", "lr_scheduler_type", "cosine"),
        ("trainer.use_vllm=true", "use_vllm", True),
        ("trainer.top_k=50", "top_k", 50),
        ("trainer.beta=0.1", "beta", 0.1),
    ],
)
def test_any_trainer_field_is_set_without_plus(override, key, expected):
    cfg = compose_config([override])
    assert cfg.trainer[key] == expected


@pytest.mark.parametrize(
    "override",
    [
        "task.max_operandd=3",  # misspelled task knob
        "model.pth=/x",  # misspelled model key
        "hardware.devic=cuda",
        "logger.projet=x",
        "trainer.lerning_rate=1e-5",  # misspelled GRPOConfig field
    ],
)
def test_misspelled_keys_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as info:
        compose_config([override])
    assert override.split("=")[0].split(".")[-1] in str(info.value) + str(info.value.__cause__)


@pytest.mark.parametrize(
    "override",
    ["trainer.beta=abc", "trainer.max_steps=ten", "task.train_size=many", "model.architecture.hidden_size=x"],
)
def test_wrong_types_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config([override])


def test_unknown_group_choice_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["task=nope"])
    assert "arithmetic" in str(info.value)


@pytest.mark.parametrize(
    "algorithm,expected",
    [
        ("grpo", {"beta": 0.04, "epsilon": 0.2, "scale_rewards": "group", "loss_type": "grpo"}),
        ("dr_grpo", {"beta": 0.0, "scale_rewards": "none", "loss_type": "dr_grpo"}),
        ("dapo", {"beta": 0.0, "scale_rewards": "group", "loss_type": "dapo"}),
    ],
)
def test_algorithm_presets_set_trl_fields(algorithm, expected, tmp_path):
    cfg = compose_config([f"algorithm={algorithm}"])
    args = make_grpo_config(cfg, str(tmp_path), [1.0])
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_grpo_is_the_default_and_overrides_beat_presets():
    assert compose_config([]).algorithm.name == "grpo"
    assert compose_config(["algorithm=grpo", "trainer.beta=0.5"]).trainer.beta == 0.5


def test_dapo_preset_is_exactly_trl_defaults():
    cfg = compose_config(["algorithm=dapo", "hardware=cpu", "logger=none"])
    passed = trainer_overrides(cfg.trainer)
    for key in ("beta", "epsilon", "scale_rewards", "loss_type"):
        assert key not in passed  # equal to GRPOConfig's default, so left to TRL


def test_links_between_nodes(tmp_path):
    cfg = compose_config(["seed=7", "task.max_completion_length=40"])
    args = make_grpo_config(cfg, str(tmp_path), [1.0])
    assert args.seed == 7 and args.max_completion_length == 40
    assert compose_config(["trainer.max_completion_length=99"]).trainer.max_completion_length == 99


def test_reward_weights_come_from_the_task_and_must_match(tmp_path):
    cfg = compose_config([])
    assert make_grpo_config(cfg, str(tmp_path), [0.5]).reward_weights == [0.5]
    cfg = compose_config(["trainer.reward_weights=[1.0,2.0]"])
    with pytest.raises(ValueError, match="reward_weights has 2 values but task 'arithmetic' has 1"):
        make_grpo_config(cfg, str(tmp_path), [1.0])


def test_a_batch_of_partial_groups_is_named_with_a_shape_that_works(tmp_path):
    cfg = compose_config(["trainer.per_device_train_batch_size=3", "trainer.num_generations=2"])
    with pytest.raises(ValueError) as err:
        make_grpo_config(cfg, str(tmp_path), [1.0])
    assert str(err.value) == (
        "the generation batch, trainer.per_device_train_batch_size=3 completions, must hold whole groups of "
        "trainer.num_generations=2 completions per prompt; for example trainer.per_device_train_batch_size=4 or "
        "trainer.num_generations one of [3]"
    )


BATCH_KEYS = ("per_device_train_batch_size", "num_generations", "gradient_accumulation_steps")


def trl_accepts(values: dict) -> bool:
    try:
        GRPOConfig(output_dir="/tmp/unused", bf16=False, **values)  # no bf16 on this CPU
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("extra", [{}, {"steps_per_generation": 3}, {"generation_batch_size": 12}])
def test_the_batch_shape_check_agrees_with_trl_and_its_suggestions_work(extra):
    """Over a grid of shapes: our check refuses exactly what TRL's refuses, and each fix it suggests is accepted."""
    defaults = grpo_config_defaults()
    refused = 0
    for shape in itertools.product([1, 2, 3, 4, 6], [1, 2, 3, 4, 8], [1, 2]):
        values = {**dict(zip(BATCH_KEYS, shape, strict=True)), **extra}
        try:
            check_trainer({**defaults, **values})  # as make_grpo_config checks, ranges first
            check_batch_shape({**defaults, **values}, world_size=1)
        except ValueError as err:
            refused += 1
            assert not trl_accepts(values), values
            message = str(err)
            for fix in re.findall(r"for example trainer\.(\w+)=(\d+)", message):
                fixed = {**values, fix[0]: int(fix[1])}
                check_batch_shape({**defaults, **fixed}, world_size=1)
                assert trl_accepts(fixed), fixed
            for groups in re.findall(r"num_generations one of \[([\d, ]+)\]", message)[:1]:
                for n in groups.split(", "):
                    assert trl_accepts({**values, "num_generations": int(n)}), (values, n)
        else:
            assert trl_accepts(values), values
    assert refused >= 10  # the grid does reach the check


@pytest.mark.parametrize(
    "values,world_size,message",
    [
        (
            {"per_device_train_batch_size": 4, "num_generations": 3, "gradient_accumulation_steps": 2},
            2,
            "the generation batch, trainer.per_device_train_batch_size=4 x 2 training processes x "
            "trainer.gradient_accumulation_steps=2 = 16 completions, must hold whole groups of "
            "trainer.num_generations=3 completions per prompt; for example trainer.per_device_train_batch_size=6 or "
            "trainer.num_generations one of [2, 4, 8, 16]",
        ),
        ({"per_device_train_batch_size": 3, "num_generations": 6}, 2, None),  # 6 completions over 2 processes
        (
            {"generation_batch_size": 12, "per_device_train_batch_size": 4},
            2,
            "trainer.generation_batch_size=12 must be a multiple of the completions of one pass, "
            "trainer.per_device_train_batch_size=4 x 2 training processes = 8",
        ),
        (
            {"generation_batch_size": 16, "steps_per_generation": 2},
            1,
            "trainer.generation_batch_size and trainer.steps_per_generation cannot both be set",
        ),
        (
            {"eval_strategy": "steps", "per_device_eval_batch_size": 6, "num_generations": 4},
            1,
            "trainer.per_device_eval_batch_size=6 must hold whole groups of 4 completions",
        ),
        ({"eval_strategy": "steps", "per_device_eval_batch_size": 6, "num_generations_eval": 3}, 1, None),
    ],
)
def test_the_batch_shape_check_counts_processes_and_evaluation(values, world_size, message):
    values = {**grpo_config_defaults(), **values}
    if message is None:
        check_batch_shape(values, world_size)
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_batch_shape(values, world_size)


def test_micro_batches_are_checked_as_the_user_gave_the_batch(tmp_path):
    batch = ["trainer.per_device_train_batch_size=6", "trainer.num_generations=4"]
    cfg = compose_config([*batch, "hardware.micro_batch=2"])
    with pytest.raises(ValueError, match=r"trainer.per_device_train_batch_size=6 completions, .*=4"):
        make_grpo_config(cfg, str(tmp_path), [1.0])


MISSING_INTEGRATION = sorted(set(INTEGRATION_TO_CALLBACK) - set(get_available_reporting_integrations()))[0]


@pytest.mark.parametrize(
    "report_to,message",
    [
        ("[tensorbord]", "trainer.report_to names 'tensorbord', which transformers does not know; it knows ["),
        (f"[wandb,{MISSING_INTEGRATION}]", f"names '{MISSING_INTEGRATION}', whose package is not installed here"),
    ],
)
def test_a_logging_integration_that_cannot_start_is_refused_before_the_model_loads(tmp_path, report_to, message):
    cfg = compose_config(["hardware=cpu", f"trainer.report_to={report_to}"])
    with pytest.raises(ValueError, match=re.escape(message)):
        make_grpo_config(cfg, str(tmp_path), [1.0])


def test_trl_s_own_refusals_say_which_trainer_values_were_given(tmp_path):
    cfg = compose_config(["hardware=cpu", "trainer.auto_find_batch_size=true"])
    with pytest.raises(ValueError) as err:
        make_grpo_config(cfg, str(tmp_path), [1.0])
    assert str(err.value).startswith(
        "trl.GRPOConfig rejected trainer.auto_find_batch_size=True, trainer.num_generations=8, "
        "trainer.per_device_train_batch_size=8: auto_find_batch_size is not supported by GRPO"
    )


@pytest.mark.parametrize(
    "trainer,micro_batch,expected",
    [
        ([], None, (8, 1, 1, 8)),  # TRL's defaults: 8 completions a pass, one generation batch per optimizer step
        ([], 2, (2, 4, 4, 8)),
        ([], 8, (8, 1, 1, 8)),  # as large as the batch, or larger: nothing to split
        (["trainer.gradient_accumulation_steps=2"], 4, (4, 4, 4, 16)),
        (["trainer.steps_per_generation=2"], 1, (1, 8, 16, 16)),  # two optimizer steps per generation, as asked
        (["trainer.generation_batch_size=32"], 2, (2, 4, 16, 32)),  # TRL derives steps_per_generation itself
    ],
)
def test_micro_batch_splits_a_pass_but_keeps_the_batches(trainer, micro_batch, expected, tmp_path):
    overrides = ["hardware=cpu", *trainer] + ([f"hardware.micro_batch={micro_batch}"] if micro_batch else [])
    args = make_grpo_config(compose_config(overrides), str(tmp_path), [1.0])
    shape = (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.steps_per_generation)
    assert (*shape, args.generation_batch_size) == expected


@pytest.mark.parametrize(
    "micro_batch,message",
    [
        (3, r"hardware.micro_batch=3 must divide trainer.per_device_train_batch_size=8 \(for example 2\)"),
        (0, "hardware.micro_batch must be a positive number of completions or null, got 0"),
    ],
)
def test_bad_micro_batch_is_named(micro_batch, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_grpo_config(compose_config(["hardware=cpu", f"hardware.micro_batch={micro_batch}"]), str(tmp_path), [1.0])


@pytest.mark.parametrize(
    "override,message",
    [
        ("learning_rate=-1e-5", "trainer.learning_rate=-1e-05 is not allowed: it must be >= 0"),
        ("learning_rate=nan", "trainer.learning_rate=nan is not allowed"),
        ("learning_rate=inf", "trainer.learning_rate=inf is not allowed"),
        ("per_device_train_batch_size=0", "trainer.per_device_train_batch_size=0 is not allowed: it must be >= 1"),
        ("gradient_accumulation_steps=0", "trainer.gradient_accumulation_steps=0 is not allowed: it must be >= 1"),
        ("num_iterations=0", "trainer.num_iterations=0 is not allowed: it must be >= 1"),
        ("max_completion_length=0", r"trainer.max_completion_length=0 is not allowed: it must be >= 1 \(tokens\)"),
        ("temperature=0", "trainer.temperature=0.0 is not allowed: it must be > 0: GRPO samples its completions"),
        ("top_p=1.5", r"trainer.top_p=1.5 is not allowed: it must be in \(0, 1\]"),
        ("top_p=0", "trainer.top_p=0.0 is not allowed"),
        ("top_k=-3", "trainer.top_k=-3 is not allowed"),
        ("min_p=2", r"trainer.min_p=2.0 is not allowed: it must be in \[0, 1\] or null"),
        ("repetition_penalty=0", "trainer.repetition_penalty=0.0 is not allowed"),
        ("beta=-0.1", "trainer.beta=-0.1 is not allowed: it must be >= 0"),
        ("epsilon=-0.2", "trainer.epsilon=-0.2 is not allowed"),
        ("epsilon_high=-0.28", "trainer.epsilon_high=-0.28 is not allowed"),
        ("max_grad_norm=-1", "trainer.max_grad_norm=-1.0 is not allowed"),
        ("weight_decay=-0.1", "trainer.weight_decay=-0.1 is not allowed"),
        ("seed=-1", r"trainer.seed=-1 is not allowed: it must be in \[0, 2\*\*32 - 1\] \(seed=N sets it\)"),
        ("num_train_epochs=0", "trainer.num_train_epochs=0.0 with trainer.max_steps=-1 trains nothing: set"),
        ("num_generations=1", "trainer.num_generations=1 is not allowed: it must be >= 2: GRPO scores each"),
    ],
)
def test_trainer_values_trl_would_only_reject_later_are_named(override, message, tmp_path):
    cfg = compose_config(["hardware=cpu", f"trainer.{override}"])
    with pytest.raises(ValueError, match=message):
        make_grpo_config(cfg, str(tmp_path), [1.0])


def test_trainer_limits_name_real_fields_and_pass_every_profile_and_preset(tmp_path):
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert {key for key, _, _ in TRAINER_LIMITS} <= fields  # a renamed field would make its check silently skip
    for overrides in (["algorithm=dapo"], ["algorithm=dr_grpo"], ["experiment=arithmetic_proof"]):
        make_grpo_config(compose_config(["hardware=cpu", *overrides]), str(tmp_path), [1.0])
    edges = ["trainer.learning_rate=0", "trainer.top_p=1", "trainer.min_p=0", "trainer.beta=0", "trainer.top_k=0",
             "trainer.num_train_epochs=0", "trainer.max_steps=5"]  # fmt: skip
    make_grpo_config(compose_config(["hardware=cpu", *edges]), str(tmp_path), [1.0])  # the edges are allowed


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], False),  # the cpu profile's value
        (["trainer.gradient_checkpointing=true"], True),
        pytest.param(
            ["trainer.gradient_checkpointing=true", "trainer.activation_checkpointing=false"],
            False,  # the new name wins
            marks=pytest.mark.skipif(
                "activation_checkpointing" not in {f.name for f in dataclasses.fields(GRPOConfig)},
                reason="transformers before the rename (5.17, the GPU machine's) has no activation_checkpointing",
            ),
        ),
    ],
)
def test_checkpointing_reaches_trl_without_a_deprecation_warning(overrides, expected, tmp_path):
    from grpo_ext.config.sft import sft_config

    cfg = compose_config(["hardware=cpu", *overrides])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for args in (make_grpo_config(cfg, str(tmp_path), [1.0]), sft_config(cfg, tmp_path)):
            assert args.gradient_checkpointing is expected
            assert getattr(args, "activation_checkpointing", expected) is expected  # where transformers has it

"""Config schemas, the ``trainer`` node derived from the installed TRL, and the one validation pass of a run.

Hydra composes ``conf/config.yaml`` against the dataclasses below, so a misspelled key or a wrongly typed value
fails at composition. The ``trainer`` node is built from ``trl.GRPOConfig``'s own fields (whatever the installed
release has, ``grpo_ext.config.trainer_node``), so every field is reachable as ``trainer.FIELD=VALUE`` without Hydra's
``+``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from grpo_ext.config.trainer_node import trainer_schema
from grpo_ext.run import processes
from grpo_ext.tasks import TASKS


@dataclass
class ArchitectureConfig:
    """The shape of a Qwen2-architecture model: enough to build a same-shaped random model offline."""

    vocab_size: int = MISSING
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_hidden_layers: int = MISSING
    num_attention_heads: int = MISSING
    num_key_value_heads: int = MISSING
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True


@dataclass
class ModelConfig:
    """``path`` is a Hub id or a local directory; ``path: null`` (or ``init: random``) builds from ``architecture``."""

    name: str = MISSING
    path: str | None = None
    revision: str | None = None
    init: str = "pretrained"  # pretrained | random
    dtype: str = "auto"  # auto (the hardware profile's) | float32 | bfloat16 | float16
    seed: int = 0  # weight seed of a built model
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)


@dataclass
class VllmConfig:
    """How completions are generated: TRL's own ``generate``, or vLLM colocated or as a server on its own GPU."""

    mode: str = "off"  # off | auto (colocate when vLLM is installed, else off) | colocate | server
    gpu_memory_utilization: float = 0.3  # colocate: the share of the training GPU vLLM may take
    managed: bool = True  # server: start and stop `vllm serve` with the run (false: connect to a running one)
    server_gpu: int = 1  # server: the GPU index `vllm serve` runs on
    host: str = "127.0.0.1"
    port: int = 8000  # server HTTP port; a sweep's job N uses port + N
    group_port: int = 51216  # weight-sync (NCCL) port; a sweep's job N uses group_port + N
    server_memory_utilization: float = 0.9  # server: the share of its GPU vLLM takes
    startup_timeout_s: float = 600.0  # server: how long it may take to answer /health
    # server: the dtype it generates in; auto: the one the trainer computes in (bf16 or fp16 mixed precision, even
    # over float32 weights; else the weights'), float16 on a server GPU without bf16 | bfloat16 | float16 | float32
    dtype: str = "auto"
    extra_args: list[str] = field(default_factory=list)  # server: more `vllm serve` flags, as given


@dataclass
class HardwareConfig:
    """Placement and precision. The profile's YAML also sets the matching ``trainer`` fields."""

    name: str = MISSING
    device: str = "cpu"  # cpu | cuda
    dtype: str = "float32"  # the model dtype when model.dtype is auto
    num_processes: int = 1  # training processes; 0: several, one per training GPU, under `accelerate launch`
    vllm: VllmConfig = field(default_factory=VllmConfig)
    # Without vLLM: trl (TRL's own generate) | static_cache (grpo_ext.backends.rollout: static KV cache, compiled on
    # CUDA)
    # | auto (static_cache for one CUDA process without QLoRA, else trl; the log says which and why)
    rollout: str = "trl"
    # At most this many completions in one forward and backward pass (null: trainer.per_device_train_batch_size);
    # the rest of the batch is accumulated, so the optimizer and generation batches stay as the trainer node says.
    micro_batch: int | None = None


@dataclass
class PeftConfig:
    """Adapters: ``none`` trains every weight; ``lora`` trains low-rank adapters; ``qlora`` adds a 4-bit base."""

    name: str = "none"  # none | lora | qlora
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # "all-linear" or a list of module names
    quant_type: str = "nf4"  # qlora: nf4 | fp4
    double_quant: bool = True  # qlora: quantize the quantization constants too


@dataclass
class LoggerConfig:
    name: str = MISSING  # none | wandb
    project: str = "grpo_ext"
    entity: str | None = None
    mode: str = "auto"  # auto (online with credentials, else offline) | online | offline | disabled
    tags: list[str] = field(default_factory=list)
    completions_every: int = 0  # a completions table every N steps (0: never)


@dataclass
class AlgorithmConfig:
    name: str = MISSING
    description: str = ""


@dataclass
class EvalConfig:
    """Evaluation on the eval split: ``python -m grpo_ext.evaluate``, and during training."""

    # during training: also every N steps (0: only before the first step and at the end); as trainer.save_steps, so
    # that a long run keeps its best model and hears of a collapse while it costs
    every: int = 100
    size: int = 100  # eval prompts used, the first of the split, here and by TRL's eval_strategy (0: all of them)
    k: int = 1  # samples per prompt for pass@k (1: greedy only)
    temperature: float = 1.0  # of the pass@k samples
    batch_size: int = 64  # completions generated at once
    max_new_tokens: int | None = None  # null: task.max_completion_length
    during_training: bool = True  # evaluate before the first step, every `every` steps and at the end
    keep_best: bool = True  # during training: keep the model of the best evaluation (RUN/best_model, RUN/best.json)
    # during training: stop the run at an evaluation whose accuracy fell below the run's best by 3 standard errors
    # or more (a collapse; the warning says it either way). A sweep's runs that collapse end there, their best kept
    stop_on_drop: bool = False
    best_metric: str = "accuracy"  # what the best maximizes: accuracy, reward (the mean), or pass@K with eval.k=K


def check_eval(node: Any) -> None:
    """Raise ``ValueError`` naming the ``eval`` key whose value is out of range."""
    for key, low in (("every", 0), ("size", 0), ("k", 1), ("batch_size", 1)):
        if getattr(node, key) < low:
            raise ValueError(f"eval.{key} must be >= {low}, got {getattr(node, key)}")
    if node.temperature <= 0:
        raise ValueError(f"eval.temperature must be > 0, got {node.temperature}")
    if node.max_new_tokens is not None and node.max_new_tokens < 1:
        raise ValueError(
            f"eval.max_new_tokens must be >= 1 (or null: task.max_completion_length), got {node.max_new_tokens}"
        )
    check_stop_on_drop("eval", node.stop_on_drop, "eval.every", node.every, node.during_training)
    ranked = ["accuracy", "reward"] + ([f"pass@{node.k}"] if node.k > 1 else [])
    if node.best_metric not in ranked:
        raise ValueError(
            f"eval.best_metric must be one of {ranked}, got {node.best_metric!r}"
            + (" (pass@K is measured with eval.k=K)" if node.best_metric.startswith("pass@") else "")
        )


def check_stop_on_drop(node: str, stop: bool, every_key: str, every: int, evaluating: bool) -> None:
    """Raise ``ValueError`` when ``NODE.stop_on_drop`` is asked of a run without evaluations between steps (every
    ``every_key`` steps while ``eval.during_training``), at which alone it can act, naming what to add."""
    if stop and not (every and evaluating):
        missing = [] if evaluating else ["eval.during_training=true"]
        missing += [] if every else [f"{every_key}=N (an evaluation every N steps)"]
        raise ValueError(
            f"{node}.stop_on_drop=true acts at the held-out evaluations between steps, and this run has none: add "
            + " ".join(missing)
        )


@dataclass
class SftConfig:
    """Supervised warm start on the task's references: ``python -m grpo_ext.sft``."""

    steps: int = 500
    batch_size: int = 64
    learning_rate: float = 1e-3  # for a small model trained from scratch; a pretrained one wants ~1e-5
    warmup_fraction: float = 0.05  # of the steps, then cosine decay
    weight_decay: float = 0.0
    max_length: int = 1024  # prompt + completion tokens; longer pairs are cut
    logging_steps: int = 10
    save_steps: int = 200
    eval_every: int = 0  # held-out greedy evaluation also every N steps (0: only before the first and after the last)
    # stop at an evaluation below the run's best by 3 standard errors or more, as eval.stop_on_drop (needs eval_every)
    stop_on_drop: bool = False


@dataclass
class SamplerConfig:
    """Which prompts each generation batch takes (``grpo_ext.run.sampler``): ``uniform`` (TRL's own shuffled order),
    ``adaptive`` (unseen prompts first, solved and failed ones drawn less or retired), ``curriculum`` (by level)."""

    name: str = "uniform"  # uniform | adaptive | curriculum
    # adaptive: a group's pass rate at or above `solved` is solved, at or below `failed` failed; a prompt whose last
    # `recent` groups were all either is drawn with `weight` (others 1), and retired after `retire_after` (0: never)
    solved: float = 1.0
    failed: float = 0.0
    recent: int = 1
    weight: float = 0.1
    retire_after: int = 0
    # curriculum: up a level when the last `window` groups at the level pass `advance` on average, down when they
    # fall to `retreat` (null: never); `review` of each batch from the levels below
    window: int = 32
    advance: float = 0.8
    retreat: float | None = 0.2
    review: float = 0.0
    # both: a grpo_ext.difficulty measurement (its difficulty.jsonl) to start from, as if its groups had been seen
    measured: str | None = None


SAMPLERS = ("uniform", "adaptive", "curriculum")


def check_sampler(node: Any, max_steps: int) -> None:
    """Raise ``ValueError`` naming the ``sampler`` key whose value cannot run."""
    if node.name not in SAMPLERS:
        raise ValueError(f"sampler.name must be one of {list(SAMPLERS)}, got {node.name!r}")
    if node.name == "uniform":
        return
    for key in ("solved", "failed", "weight", "advance", "review"):
        if not 0.0 <= getattr(node, key) <= 1.0:
            raise ValueError(f"sampler.{key} must be in [0, 1], got {getattr(node, key)}")
    if node.retreat is not None and not 0.0 <= node.retreat < node.advance:
        raise ValueError(f"sampler.retreat must be in [0, sampler.advance={node.advance}) or null, got {node.retreat}")
    if node.failed >= node.solved:
        raise ValueError(f"sampler.failed={node.failed} must be below sampler.solved={node.solved}")
    for key in ("recent", "window"):
        if getattr(node, key) < 1:
            raise ValueError(f"sampler.{key} must be >= 1 (groups), got {getattr(node, key)}")
    if node.retire_after < 0:
        raise ValueError(f"sampler.retire_after must be >= 0 (0: never retire), got {node.retire_after}")
    if max_steps <= 0:
        raise ValueError(f"sampler={node.name} draws its prompts as the run goes: set trainer.max_steps")
    if node.measured is not None and not Path(node.measured).expanduser().is_file():
        raise ValueError(
            f"sampler.measured={node.measured}: no such file (a grpo_ext.difficulty run's difficulty.jsonl)"
        )


@functools.cache
def config_schema() -> type:
    return dataclasses.make_dataclass(
        "Config",
        [
            ("task", Any, field(default=MISSING)),  # typed per task: conf/task/NAME.yaml names its schema
            ("model", ModelConfig, field(default_factory=ModelConfig)),
            ("hardware", HardwareConfig, field(default_factory=HardwareConfig)),
            ("peft", PeftConfig, field(default_factory=PeftConfig)),
            ("logger", LoggerConfig, field(default_factory=LoggerConfig)),
            ("algorithm", AlgorithmConfig, field(default_factory=AlgorithmConfig)),
            ("eval", EvalConfig, field(default_factory=EvalConfig)),
            ("sft", SftConfig, field(default_factory=SftConfig)),
            ("sampler", SamplerConfig, field(default_factory=SamplerConfig)),
            ("trainer", trainer_schema(), field(default_factory=trainer_schema())),
            ("seed", int, field(default=42)),
            ("resume", str, field(default="auto")),  # auto | none | a checkpoint directory
            ("reward_failure_limit", float, field(default=0.1)),  # share of a batch a reward may fail on
            ("objective", str, field(default="reward")),  # the metrics.jsonl key a run returns to an Optuna sweep
        ],
    )


def dir_name(text: str, limit: int = 120) -> str:
    """``text`` as one directory name: no ``/``, and long ones cut, with a hash so that they stay distinct."""
    name = text.replace("/", "_").replace(" ", "") or "default"
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def register_configs() -> None:
    """Store the schemas where the YAML defaults lists name them (``config_schema``, ``schema/task/NAME``), and
    the resolvers of run directories: ``dir_name`` names sweep jobs' directories, ``launch_time`` stamps a run's
    (Hydra's ``now``, but the same in every process of a multi-GPU launch: ``grpo_ext.run.processes``)."""
    if not OmegaConf.has_resolver("dir_name"):
        OmegaConf.register_new_resolver("dir_name", dir_name)
    if not OmegaConf.has_resolver("launch_time"):
        OmegaConf.register_new_resolver("launch_time", processes.launch_time, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=config_schema())
    for name, task in TASKS.items():
        cs.store(group="schema/task", name=name, node=task.schema)

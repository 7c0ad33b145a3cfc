"""Hardware profiles at run time: ``hardware=auto`` picks a profile from the visible GPUs, and the generation path
(TRL's own ``generate``, vLLM colocated, or a vLLM server on its own GPU) is settled here, with errors that name
what is missing and how to get it.

The profiles themselves are YAML under ``conf/hardware/`` (placement and precision only); this module holds what
cannot be decided before the run starts: which GPUs exist, and whether a usable vLLM is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo_ext.run import processes

log = logging.getLogger(__name__)

# The vLLM releases TRL 1.16 supports (trl.import_utils.is_vllm_available); the `vllm` extra pins the same range.
VLLM_RANGE = ("0.22.0", "0.31.0")
VLLM_MODES = ("off", "auto", "colocate", "server")
VLLM_DTYPES = ("auto", "bfloat16", "float16", "float32")  # hardware.vllm.dtype: what a server generates in
ROLLOUTS = ("trl", "static_cache", "auto")  # hardware.rollout: how completions are generated when vLLM is not used
SINGLE_GPU_LIMITS_GIB = ((16.0, "gpu_10gb"), (40.0, "gpu_24gb"))  # under 16 GiB: gpu_10gb; under 40: gpu_24gb
PRECISION_KEYS = ("trainer.bf16", "trainer.fp16", "hardware.dtype", "model.dtype")  # a user's own: left alone
INSTALL_VLLM = "install the vllm extra: pip install 'grpo-ext[vllm]' (needs CUDA and vLLM's matching torch)"


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16: bool = True  # computes bf16 natively (NVIDIA from Ampere on, AMD); PyTorch emulates it on older GPUs


def visible_gpus() -> list[Gpu]:
    """The CUDA GPUs this process can see (``CUDA_VISIBLE_DEVICES`` applies), with their total memory."""
    import torch

    if not torch.cuda.is_available():
        return []
    properties = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    amd = torch.version.hip is not None
    return [Gpu(p.name, p.total_memory / 2**30, amd or p.major >= 8) for p in properties]


def pick_profile(gpus: list[Gpu], vllm_issue: str | None, launched: int = 1) -> tuple[str, str]:
    """The profile ``hardware=auto`` stands for on a machine with ``gpus`` and ``vllm_issue`` (``vllm_problem()``:
    None when a usable vLLM is installed), and why, in words for the log. ``launched``: the training processes a
    launcher started (torchrun, accelerate), each of which trains on a GPU of its own."""
    if not gpus:
        return "cpu", "no CUDA GPU is visible"
    if launched > 1:  # the GPUs are taken, one per process: each process's profile is its own GPU's
        single, _ = pick_profile(gpus[:1], vllm_issue)
        return single, f"{launched} training processes, one per GPU: {gpus[0].name} with {gpus[0].memory_gib:.0f} GiB"
    if len(gpus) >= 2 and vllm_issue is None:
        if len(gpus) == 2:
            return "gpu2_vllm_server", "2 GPUs and vLLM installed: training on GPU 0, a vLLM server on GPU 1"
        last = len(gpus) - 1
        return "multigpu", f"{len(gpus)} GPUs and vLLM installed: training on GPUs 0-{last - 1}, vLLM on GPU {last}"
    first = gpus[0]
    single = next((name for limit, name in SINGLE_GPU_LIMITS_GIB if first.memory_gib < limit), "gpu_80gb")
    why = f"{first.name} with {first.memory_gib:.0f} GiB"
    if len(gpus) >= 2:
        why = f"{len(gpus)} GPUs but no usable vLLM ({vllm_issue}), so one GPU trains: {why}"
    return single, why


def vllm_version() -> str | None:
    """The installed vLLM's version, or None."""
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return None


def vllm_problem(version: str | None = None) -> str | None:
    """Why the installed vLLM (or ``version``) cannot be used with TRL 1.16, or None when it can."""
    from packaging.version import InvalidVersion, Version

    version = version or vllm_version()
    if version is None:
        return "vLLM is not installed"
    low, high = VLLM_RANGE
    try:
        supported = Version(low) <= Version(Version(version).base_version) <= Version(high)
    except InvalidVersion:
        supported = False
    if not supported:
        return f"vLLM {version} is installed but TRL 1.16 supports {low} to {high}"
    return None


def resolve_auto(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``cfg`` with ``hardware=auto`` replaced by the profile this machine calls for, composed again with the same
    command-line ``overrides`` (so that the profile's own choices, such as ``peft=lora``, and the user's, apply).

    Needs Hydra's global state, as inside ``@hydra.main`` or an ``initialize`` block.
    """
    if cfg.hardware.name != "auto":
        return cfg
    from hydra import compose

    gpus = visible_gpus()
    name, why = pick_profile(gpus, vllm_problem(), processes.world_size())
    log.info("hardware=auto picked hardware=%s: %s", name, why)
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "hardware"]
    resolved = compose(config_name="config", overrides=[*kept, f"hardware={name}"])
    chosen = {o.split("=", 1)[0].lstrip("+~") for o in kept}
    if gpus and not gpus[0].bf16 and resolved.trainer.bf16 and not chosen & set(PRECISION_KEYS):
        fp16_instead(resolved, gpus[0].name)
    return resolved


def fp16_instead(cfg: DictConfig, gpu: str) -> None:
    """Turn ``cfg``'s bf16 profile into fp16 mixed precision, in place, for a GPU that does not compute bf16 itself
    (NVIDIA before Ampere: T4, V100, RTX 20xx, whose tensor cores compute fp16 but not bf16, which PyTorch emulates).

    Mixed precision keeps trained weights in float32 (the gradient scaler refuses float16 gradients); adapters are
    kept in float32 by peft, so under them the base model's weights can be float16, half the memory.
    """
    weights = "float32" if cfg.peft.name == "none" else "float16"
    for key, value in (("trainer.bf16", False), ("trainer.fp16", True), ("hardware.dtype", weights)):
        OmegaConf.update(cfg, key, value)
    log.info(
        "hardware=auto: %s does not compute bf16 itself (PyTorch would emulate it, without tensor cores), so training "
        "is in fp16 mixed precision: trainer.fp16=true, hardware.dtype=%s%s",
        gpu,
        weights,
        " (the base model's weights; the adapters train in float32)" if weights == "float16" else "",
    )


def check_precision(cfg: DictConfig) -> None:
    """Raise ``ValueError`` for a precision that fails on the GPU at the first optimizer step, and warn of one that
    runs without the GPU's tensor cores."""
    from grpo_ext.backends.models import torch_dtype

    if cfg.hardware.device != "cuda":
        return  # on the CPU, fp16 and bf16 mixed precision do not scale gradients: nothing to refuse
    weights = torch_dtype(cfg.model.dtype, cfg.hardware.dtype)
    deepspeed = cfg.trainer.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"  # scales on its own
    if cfg.trainer.fp16 and weights == "float16" and cfg.peft.name == "none" and not deepspeed:
        raise ValueError(
            "trainer.fp16=true with float16 weights and no adapters fails at the first optimizer step (the gradient "
            "scaler refuses float16 gradients: 'Attempting to unscale FP16 gradients'): mixed precision trains "
            "float32 weights (hardware.dtype=float32, model.dtype=auto), or train adapters, which peft keeps in "
            "float32 over float16 weights (peft=lora)"
        )
    emulated = [gpu.name for gpu in visible_gpus() if not gpu.bf16]
    if cfg.trainer.bf16 and emulated:
        log.warning(
            "hardware=%s trains in bf16, which %s does not compute itself (PyTorch emulates it, without tensor "
            "cores): hardware=auto picks fp16 for it, or add trainer.bf16=false trainer.fp16=true and "
            "hardware.dtype=float16 with adapters (float32 without)",
            cfg.hardware.name,
            emulated[0],
        )


def check_device(hw: DictConfig) -> None:
    """Raise ``ValueError`` when the profile runs on a CUDA GPU and PyTorch sees none (before any model loads, rather
    than PyTorch's or transformers' error once one does)."""
    if hw.device == "cuda" and not visible_gpus():
        raise ValueError(
            f"hardware={hw.name} runs on a CUDA GPU, and this machine shows none to PyTorch "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use hardware=cpu, or "
            "hardware=auto, which picks a profile for the GPUs it finds"
        )


def check_launch(hw: DictConfig) -> None:
    """Several training processes exist only under ``accelerate launch``: refuse to start one process alone; a vLLM
    server started by the run itself serves one training process: refuse it under a launcher of several."""
    if hw.num_processes != 1 and "WORLD_SIZE" not in os.environ:
        raise ValueError(
            f"hardware={hw.name} trains one process per GPU under accelerate: start it with launch/vllm_server.sh "
            "(for example MODEL=... TRAIN_GPUS=0,1,2 VLLM_GPU=3 launch/vllm_server.sh), which also runs vLLM"
        )
    if processes.world_size() > 1 and hw.vllm.mode == "server" and hw.vllm.managed:
        raise ValueError(
            f"hardware={hw.name} starts a vLLM server for one training process, and this launch has "
            f"{processes.world_size()}: for several, launch/vllm_server.sh starts one server for all of them "
            "(MODEL=... TRAIN_GPUS=0,1,2 VLLM_GPU=3 launch/vllm_server.sh), or add hardware.vllm.managed=false and "
            "start `vllm serve` yourself"
        )


def generation_settings(cfg: DictConfig) -> dict[str, Any]:
    """The ``GRPOConfig`` fields that the profile's generation path sets (``hardware.vllm``, with ``peft``).

    ``mode: auto`` uses colocated vLLM when a supported vLLM is installed and falls back to TRL's own generate (with
    a log line saying why); ``colocate`` and ``server`` insist, with an error naming the missing extra.
    """
    vllm, peft = cfg.hardware.vllm, cfg.peft.name
    if vllm.mode not in VLLM_MODES:
        raise ValueError(f"hardware.vllm.mode must be one of {list(VLLM_MODES)}, got {vllm.mode!r}")
    for key in ("port", "group_port"):
        if not 1 <= vllm[key] <= 65535:
            raise ValueError(f"hardware.vllm.{key} must be a TCP port (1-65535), got {vllm[key]}")
    if vllm.port == vllm.group_port:
        raise ValueError(f"hardware.vllm.port and hardware.vllm.group_port must differ (both {vllm.port})")
    if vllm.dtype not in VLLM_DTYPES:
        raise ValueError(f"hardware.vllm.dtype must be one of {list(VLLM_DTYPES)}, got {vllm.dtype!r}")
    mode = vllm.mode
    if mode == "auto":
        problem = (
            "peft=qlora (adapters merged into 4-bit weights for vLLM would be lossy)" if peft == "qlora" else None
        )
        problem = problem or vllm_problem()
        if problem:
            log.info("generation with TRL's own generate: %s", problem)
            return {}
        mode = "colocate"
    if mode == "off":
        return {}
    if peft == "qlora":
        raise ValueError(
            f"peft=qlora cannot be used with hardware.vllm.mode={mode}: the adapters would be merged into 4-bit "
            "weights before every weight sync, which is lossy. Use peft=lora, or hardware.vllm.mode=off"
        )
    problem = vllm_problem()
    if problem:
        raise ValueError(f"hardware.vllm.mode={mode} needs vLLM: {problem}; {INSTALL_VLLM}")
    if mode == "colocate":
        if not 0.0 < vllm.gpu_memory_utilization < 1.0:
            raise ValueError(
                f"hardware.vllm.gpu_memory_utilization must be in (0, 1), got {vllm.gpu_memory_utilization}"
            )
        return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": vllm.gpu_memory_utilization}
    return {
        "use_vllm": True,
        "vllm_mode": "server",
        "vllm_server_host": vllm.host,
        "vllm_server_port": vllm.port,
        "vllm_group_port": vllm.group_port,
        "vllm_server_timeout": vllm.startup_timeout_s,
    }


def rollout_problem(rollout: str, device: str, peft: str, uses_vllm: bool, num_processes: int) -> str | None:
    """Why ``hardware.rollout=static_cache`` cannot run, or would be slower than TRL's own generate, for this run;
    None when it fits. ``rollout`` is the value asked for (``auto`` or ``static_cache``)."""
    if uses_vllm:
        return "this run generates with vLLM; add hardware.vllm.mode=off to generate without it"
    if num_processes != 1:
        return "it is for one training process (DeepSpeed ZeRO-3 shards the weights that generation needs)"
    if peft == "qlora":
        return (
            "transformers does not compile 4-bit bitsandbytes models, and an uncompiled static cache is slower than "
            "TRL's generate"
        )
    if rollout == "auto" and device != "cuda":
        return f"the decode step is compiled on CUDA only, and this run is on {device}"
    if device == "cuda" and importlib.util.find_spec("triton") is None:
        return (
            "torch.compile needs triton on CUDA, and it is not installed "
            "(pip install triton; on Windows: triton-windows)"
        )
    return None


def rollout_func(hw: DictConfig, uses_vllm: bool, peft: str = "none") -> Any:
    """The ``rollout_func`` for ``GRPOTrainer`` that ``hardware.rollout`` names: ``None`` for TRL's own generate,
    a ``grpo_ext.backends.rollout.StaticCacheRollout`` for ``static_cache``; ``auto`` takes the static cache where
    it pays (one CUDA process without vLLM or QLoRA) and says which it took. ``uses_vllm``: the run's
    GRPOConfig.use_vllm; ``peft``: ``cfg.peft.name``."""
    if hw.rollout not in ROLLOUTS:
        raise ValueError(f"hardware.rollout must be one of {list(ROLLOUTS)}, got {hw.rollout!r}")
    if hw.rollout == "trl" or (hw.rollout == "auto" and uses_vllm):
        return None
    launched = processes.world_size()  # torchrun or accelerate with any profile, not only multigpu
    problem = rollout_problem(hw.rollout, hw.device, peft, uses_vllm, hw.num_processes if launched == 1 else launched)
    if hw.rollout == "auto":
        log.info("hardware.rollout=auto: %s", f"TRL's own generate, since {problem}" if problem else "static_cache")
        if problem:
            return None
    elif problem:
        raise ValueError(f"hardware.rollout=static_cache cannot be used here: {problem}; or use hardware.rollout=auto")
    from grpo_ext.backends.rollout import StaticCacheRollout

    # GRPOTrainer warns that rollout_func is experimental and may change: trl==1.16.* is pinned, so it cannot change
    # under this code, and the warning would leave the user nothing to act on
    warnings.filterwarnings("ignore", message="You are using 'rollout_func'", category=UserWarning)
    return StaticCacheRollout()


def out_of_memory(err: BaseException, cfg: DictConfig, args: Any, last_step: int, checkpoint: Any) -> str:
    """The message for a GRPO run that ran out of GPU memory: where, what would hold less (the same learning
    first), and the checkpoint to resume from. ``last_step``: the last step completed; ``checkpoint``: the newest
    complete one, or ``None``."""
    per_pass, batch = args.per_device_train_batch_size, cfg.trainer.per_device_train_batch_size
    same_learning = []
    if in_evaluation(err):
        where = f"the held-out evaluation after step {last_step}"
        same_learning.append(smaller_eval_batch(cfg))
    else:
        where = f"step {last_step + 1}"
        if per_pass > 1:
            smaller = max(n for n in range(1, per_pass) if batch % n == 0)
            same_learning.append(f"hardware.micro_batch={smaller} ({per_pass} completions a pass now)")
    if not args.gradient_checkpointing:
        same_learning.append(CHECKPOINTING)
    if args.use_vllm and args.vllm_mode == "colocate":
        same_learning.append(
            f"a lower hardware.vllm.gpu_memory_utilization (vLLM holds {args.vllm_gpu_memory_utilization:.0%})"
        )
    other = [f"trainer.max_completion_length={max(1, args.max_completion_length // 2)} (shorter completions)"]
    if cfg.peft.name == "none":
        other.insert(0, ADAPTERS)
    if args.beta > 0:
        other.append("trainer.beta=0 (no reference model in memory)")
    return out_of_memory_message(err, where, same_learning, other, checkpoint)


def sft_out_of_memory(err: BaseException, cfg: DictConfig, last_step: int, checkpoint: Path | None) -> str:
    """The message for an SFT run that ran out of GPU memory: where, what would hold less, the checkpoint."""
    if in_evaluation(err):
        where = f"the held-out evaluation after SFT step {last_step}"
        return out_of_memory_message(err, where, [smaller_eval_batch(cfg)], [], checkpoint)
    other = [f"sft.batch_size={max(1, cfg.sft.batch_size // 2)} (references a step)"]
    other.append(f"sft.max_length={max(1, cfg.sft.max_length // 2)} (tokens a pair; longer ones are cut)")
    if cfg.peft.name == "none":
        other.insert(0, ADAPTERS)
    checkpointing = any(
        OmegaConf.select(cfg.trainer, name) for name in ("gradient_checkpointing", "activation_checkpointing")
    )
    same = [] if checkpointing else [CHECKPOINTING]
    return out_of_memory_message(err, f"SFT step {last_step + 1}", same, other, checkpoint)


ADAPTERS = "peft=lora (adapters: the optimizer holds a fraction of the weights' state)"
CHECKPOINTING = "trainer.gradient_checkpointing=true (recomputes activations in the backward pass)"


def smaller_eval_batch(cfg: DictConfig) -> str:
    """The advice for the held-out evaluation out of memory: half its batch."""
    return f"eval.batch_size={max(1, cfg.eval.batch_size // 2)} (completions generated at once)"


def in_evaluation(err: BaseException) -> bool:
    """Whether ``err`` was raised in the held-out evaluation (``grpo_ext/monitor/heldout.py``)."""
    frames = traceback.extract_tb(err.__traceback__)
    return any(Path(frame.filename).parts[-2:] == ("monitor", "heldout.py") for frame in frames)


def out_of_memory_message(
    err: BaseException, where: str, same_learning: list[str], other: list[str], checkpoint: Any
) -> str:
    """``out of GPU memory in WHERE (CUDA's first line). Holds less with the same learning: ...``, then
    what holds less and changes what is trained, then the checkpoint to resume from (``None``: none yet)."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if checkpoint:
        resume = f"The last complete checkpoint is {checkpoint}; the same command (same hydra.run.dir) resumes there."
    else:
        resume = "No checkpoint was saved yet: the run starts again from the first step."
    return (
        f"out of GPU memory in {where} ({first_line}). "
        + (f"Holds less with the same learning: {'; '.join(same_learning)}. " if same_learning else "")
        + (
            f"Holds less, and changes what is trained (a new run, in another hydra.run.dir): {'; '.join(other)}. "
            if other
            else ""
        )
        + resume
    )

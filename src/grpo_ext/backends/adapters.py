"""Adapters (the ``peft`` group): LoRA over a frozen base, or QLoRA over a base loaded in 4-bit.

TRL applies them itself: ``peft_config`` and ``quantization_config`` are arguments of ``GRPOTrainer``. What is ours:
checking the values, the bitsandbytes configuration, and the final model. A run with adapters saves the adapter
(``final_adapter/``) and also the base with the adapter merged in, in full precision (``final_model/``), so that
``model.path=RUN/final_model`` works for evaluation, inference, SFT and vLLM exactly as after full fine-tuning.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo_ext.backends import models
from grpo_ext.config import plain
from grpo_ext.run import processes
from grpo_ext.run.rundir import RunDir

log = logging.getLogger(__name__)

QUANT_TYPES = ("nf4", "fp4")


def check(peft: DictConfig, device: str) -> None:
    """Refuse bad adapter settings before anything is loaded."""
    if peft.name not in ("none", "lora", "qlora"):
        raise ValueError(f"peft.name must be none, lora or qlora, got {peft.name!r}")
    if peft.name == "none":
        return
    if peft.r < 1:
        raise ValueError(f"peft.r (the LoRA rank) must be at least 1, got {peft.r}")
    if peft.alpha <= 0:
        raise ValueError(f"peft.alpha must be positive, got {peft.alpha}")
    if not 0.0 <= peft.dropout < 1.0:
        raise ValueError(f"peft.dropout must be in [0, 1), got {peft.dropout}")
    targets = peft.target_modules
    if not (
        targets == "all-linear"
        or (OmegaConf.is_list(targets) and targets and all(isinstance(t, str) for t in targets))
    ):
        raise ValueError(f"peft.target_modules must be 'all-linear' or a list of module names, got {targets!r}")
    if peft.name == "qlora":
        if peft.quant_type not in QUANT_TYPES:
            raise ValueError(f"peft.quant_type must be one of {list(QUANT_TYPES)}, got {peft.quant_type!r}")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("peft=qlora needs bitsandbytes: install the quant extra, pip install 'grpo-ext[quant]'")
        if device not in ("cuda", "cpu"):
            raise ValueError(f"peft=qlora runs on a CUDA GPU or the CPU (bitsandbytes); hardware.device is {device}")
        if device == "cpu" and not four_bit_on_cpu():
            raise ValueError(
                f"peft=qlora on the CPU needs a bitsandbytes with CPU 4-bit kernels; bitsandbytes "
                f"{importlib.metadata.version('bitsandbytes')} has none: upgrade it, or train on a CUDA GPU"
            )


def four_bit_on_cpu() -> bool:
    """Whether the installed bitsandbytes quantizes to 4 bits on the CPU (recent releases do, in plain PyTorch)."""
    try:
        import torch
        from bitsandbytes.functional import quantize_4bit

        quantize_4bit(torch.ones(64), quant_type="nf4")
    except Exception:  # noqa: BLE001 - any failure means: not on this CPU
        return False
    return True


def lora_config(peft: DictConfig) -> Any:
    """The ``peft.LoraConfig`` for ``GRPOTrainer(peft_config=...)``, or None for full fine-tuning."""
    if peft.name == "none":
        return None
    from peft import LoraConfig

    targets = peft.target_modules
    return LoraConfig(
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def quantization_config(peft: DictConfig, compute_dtype: str) -> Any:
    """The 4-bit ``BitsAndBytesConfig`` for ``GRPOTrainer(quantization_config=...)`` under QLoRA, else None."""
    if peft.name != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=peft.quant_type,
        bnb_4bit_use_double_quant=peft.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def check_resume(checkpoint: Path, peft: DictConfig) -> None:
    """Raise ``ValueError`` when ``checkpoint`` cannot be resumed with these adapter settings (``resume=CHECKPOINT``
    takes new settings on purpose, but an adapter of another rank, or none, cannot load: the Trainer failed with a
    state-dict size mismatch or "Can't find a checkpoint index")."""
    config = checkpoint / "adapter_config.json"
    if not config.is_file():
        if peft.name != "none":
            raise ValueError(
                f"resume={checkpoint} holds a whole model (a run without adapters), and this run trains adapters "
                f"(peft={peft.name}): resume it with peft=none, or start a new run from it with "
                f"model.path={checkpoint} peft={peft.name}"
            )
        return
    try:
        saved = json.loads(config.read_text())
    except ValueError as err:
        raise ValueError(f"resume={checkpoint}: its adapter_config.json is not JSON ({err})") from err
    trained = _trained_with(checkpoint, saved)
    if peft.name == "none":
        raise ValueError(
            f"resume={checkpoint} holds a LoRA adapter, and this run trains without adapters (peft=none): resume it "
            f"with the adapter it was trained with ({trained}), or start a new run from it merged into its base "
            f"(python -m grpo_ext.merge {checkpoint})"
        )
    changed = [f"peft.r: {saved.get('r')} -> {peft.r}"] if saved.get("r") != peft.r else []
    targets = peft.target_modules
    if not isinstance(targets, str) and set(targets) != set(saved.get("target_modules") or []):
        changed.append(f"peft.target_modules: {sorted(saved.get('target_modules') or [])} -> {sorted(targets)}")
    if changed:
        raise ValueError(
            f"resume={checkpoint} holds a LoRA adapter of another shape than this run's ({'; '.join(changed)}): "
            f"resume it with the adapter settings it was trained with ({trained}), or start a new run from it merged "
            f"into its base (python -m grpo_ext.merge {checkpoint})"
        )


def _trained_with(checkpoint: Path, adapter: dict[str, Any]) -> str:
    """The adapter settings ``checkpoint`` was trained with, as overrides: its run's ``config.yaml`` says which (LoRA
    and QLoRA adapters are alike on disk); without one, the LoRA settings in ``adapter``, its adapter_config.json."""
    import yaml

    try:
        peft = plain(OmegaConf.load(RunDir(checkpoint.parent).config).peft)
    except (OSError, yaml.YAMLError, AttributeError, KeyError):  # a checkpoint outside its run directory
        peft = {"name": "lora", "r": adapter.get("r"), "target_modules": adapter.get("target_modules")}
    targets = peft.get("target_modules")  # all-linear, the default, goes without saying
    listed = f" peft.target_modules=[{','.join(sorted(targets))}]" if isinstance(targets, list) else ""
    return f"peft={peft.get('name')} peft.r={peft.get('r')}{listed}"


def keep_4bit_layers_trainable(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for inference on the CPU, which breaks training after it.

    bitsandbytes (0.50) repacks a 4-bit layer's weights into a layout for fast CPU inference the first time the layer
    runs in eval mode without gradients, on CPUs with AVX512-BF16, and never unpacks them: every training forward
    after that takes the inference kernel and fails ("a view of a leaf Variable that requires grad is being used in
    an in-place operation"). Evaluation between training steps is exactly that sequence. No effect on CUDA models or
    models without 4-bit layers.
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def save_final(trainer: Any, run_dir: Path | RunDir, peft: DictConfig, base_path: str, dtype: str) -> Path:
    """Save the trained model as ``run_dir/final_model`` (and the adapter as ``final_adapter``); return the former.

    With adapters, the base is loaded again in ``dtype`` on the CPU (never 4-bit) and the adapter merged into it,
    so a QLoRA run's final model is not degraded by the quantization used while training. The best adapter kept
    during training (``best_adapter``, ``grpo_ext.run.best_model``) is merged into ``best_model`` the same way.
    Every training process calls this (saving may gather sharded weights); only the main one merges.
    """
    run_dir = RunDir(run_dir)
    final = run_dir.final_model
    if peft.name == "none":
        trainer.save_model(str(final))
        return final
    trainer.save_model(str(run_dir.final_adapter))
    if not processes.is_main():
        return final
    _merge(run_dir.final_adapter, final, base_path, dtype, trainer.processing_class)
    if run_dir.best_adapter.is_dir() and not run_dir.best_model.is_dir():
        _merge(run_dir.best_adapter, run_dir.best_model, base_path, dtype, trainer.processing_class)
    return final


def _merge(adapter_dir: Path, target: Path, base_path: str, dtype: str, tokenizer: Any) -> None:
    merge(adapter_dir, target, base_path, dtype, tokenizer)
    log.info("adapter %s merged into the base in %s", adapter_dir, target)


def base_of(adapter_dir: Path, base: str | None) -> str:
    """The local directory of the model ``adapter_dir`` was trained over (``base`` when given), or ``ValueError``
    naming what is missing."""
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        inside = "config.json: already a plain model" if (adapter_dir / "config.json").is_file() else "no adapter"
        raise ValueError(f"{adapter_dir} has no adapter_config.json ({inside}): give a directory a run with "
                         "adapters saved (RUN/checkpoint-N, RUN/final_adapter, RUN/best_adapter)")  # fmt: skip
    if base is None:
        try:
            base = json.loads(config.read_text())["base_model_name_or_path"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{config} names no base model (base_model_name_or_path): give it with --base") from err
    local = Path(base).expanduser()
    if local.is_dir():
        return str(local)
    if models.is_path(base):
        raise ValueError(f"the adapter's base model, {base}, is not there (moved, or a cache since cleared): give it "
                         "with --base DIR")  # fmt: skip
    try:
        return models.from_hub(base, None)
    except models.ModelUnavailableError as err:
        raise ValueError(f"the adapter's base model is not available ({err}); or give it with --base DIR") from err


def merge(adapter_dir: Path, out: Path, base: str, dtype: str, tokenizer: Any = None) -> None:
    """Write ``adapter_dir`` merged into ``base`` (loaded in ``dtype``, or its own for ``auto``) to ``out``, with
    ``tokenizer`` (default: the adapter directory's, else the base's). Built beside ``out``, then renamed: a crash
    leaves no half-written model that looks complete, and a model already at ``out`` is replaced whole."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tokenizer is None:
        has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir if has_tokenizer else base))
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype="auto" if dtype == "auto" else getattr(torch, dtype), device_map="cpu"
    )
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    old = out.parent / f".{out.name}-replaced"
    try:
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        if out.exists():
            out.rename(old)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

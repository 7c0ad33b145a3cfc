"""Model resolution: every ``model`` node becomes a local directory that TRL loads by path.

TRL builds its reference model from the policy's path, so even a model built here is saved first. Three cases:

* ``path: null`` (the ``tiny`` model) or ``init: random``: a Qwen2-architecture model with random weights, shaped by
  ``model.architecture``, with a byte-level tokenizer and a ChatML template; built deterministically from the config
  and cached under ``$GRPO_EXT_CACHE`` (default ``~/.cache/grpo_ext``).
* a local directory: used as it is (an SFT checkpoint, a model copied by hand).
* a Hub id: taken from the local Hugging Face cache, else downloaded; an unreachable Hub fails fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grpo_ext.config import plain
from grpo_ext.errors import ModelError
from grpo_ext.hub import HUB_TIMEOUT_S, hub_offline
from grpo_ext.run.rundir import ADAPTERS, SAVED_MODELS

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelUnavailableError(ModelError):
    """A model named by the config cannot be found locally or fetched."""


def cache_root() -> Path:
    return Path(os.environ.get("GRPO_EXT_CACHE", Path.home() / ".cache" / "grpo_ext"))


def check(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming the ``model`` key whose value is not one of the allowed ones."""
    if cfg.init not in ("pretrained", "random"):
        raise ValueError(f"model.init must be 'pretrained' or 'random', got {cfg.init!r}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {list(DTYPES)}, got {cfg.dtype!r}")


def resolve(cfg: DictConfig) -> str:
    """The local directory holding the model (weights, config, tokenizer) that ``cfg`` describes."""
    check(cfg)
    if cfg.path is None or cfg.init == "random":
        return str(build_random(cfg))
    if Path(cfg.path).expanduser().is_dir():
        local = Path(cfg.path).expanduser()
        if not (local / "config.json").is_file():
            inside = [p for p in sorted(local.glob("*/config.json")) if p.parent.name in SAVED_MODELS]
            hint = f"; the run directory's models: {', '.join(str(p.parent) for p in inside)}" if inside else ""
            if (local / "adapter_config.json").is_file():  # final_adapter/, best_adapter/: the merged model is beside
                merged = local.parent / ADAPTERS.get(local.name, local.name)
                hint = f"; it holds a LoRA adapter, which the run also saved merged into its base: {merged}"
                if local.name not in ADAPTERS or not merged.is_dir():  # a checkpoint's
                    hint = (
                        f"; it holds a LoRA adapter: merge it into its base with python -m grpo_ext.merge {cfg.path}, "
                        f"then use model.path={default_merged(local)}"
                    )
            raise ModelUnavailableError(
                f"model.path={cfg.path} is a directory without config.json: not a saved model{hint}"
            )
        return check_chat_template(str(local), cfg.path)
    if is_path(cfg.path):
        raise ModelUnavailableError(
            f"model.path={cfg.path}: no such directory (a saved model is a directory with config.json, such as a "
            "run's final_model/; a Hub model is named OWNER/NAME)"
        )
    return check_chat_template(from_hub(cfg.path, cfg.revision), cfg.path)


SHAPE_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads",
)  # fmt: skip


def check_checkpoint_shape(checkpoint: Path, model_dir: str) -> None:
    """Raise ``ModelUnavailableError`` when ``checkpoint`` holds a whole model, or an adapter trained over a model, of
    another shape than the one in ``model_dir`` (``resume=CHECKPOINT`` with another model: the Trainer failed loading
    it, with a state-dict size mismatch); warn when an adapter goes on over another base model of its shape, whose
    weights may not be the ones it was trained over. (``adapters.check_resume`` checks the adapter's own shape.)"""
    current = _read_json(Path(model_dir) / "config.json")
    adapter = _read_json(Path(checkpoint) / "adapter_config.json")
    if adapter is not None:
        base = adapter.get("base_model_name_or_path") or ""
        if not base or Path(base).resolve() == Path(model_dir).resolve():
            return
        changed = _shape_changes(_read_json(Path(base) / "config.json"), current)
        if changed:
            raise ModelUnavailableError(
                f"resume={checkpoint} holds a LoRA adapter trained over a model of another shape than this run's "
                f"({'; '.join(changed)}): resume it over the model it was trained over, model.path={base}"
            )
        logger.warning(
            "resume=%s holds a LoRA adapter trained over %s, and this run's base model is %s: the adapter goes on "
            "over these weights. If they are not the same (another model, revision or seed), resume with "
            "model.path=%s",
            checkpoint,
            base,
            model_dir,
            base,
        )
        return
    saved = _read_json(Path(checkpoint) / "config.json")
    changed = _shape_changes(saved, current)
    if changed:
        trained = (saved or {}).get("_name_or_path") or "another model"
        raise ModelUnavailableError(
            f"resume={checkpoint} holds a model of another shape than this run's model ({'; '.join(changed)}): it was "
            f"trained from {trained}; resume it with the model it was trained from, or start a new run from it with "
            f"model.path={checkpoint}"
        )


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
DIGEST_BYTES = 1 << 16


def digest(model_dir: str | Path) -> str:
    """A digest of the model saved in ``model_dir``, which changes when the model does: its ``config.json``, and of
    each weights file its name, size and first and last 64 KiB (a safetensors file starts with its tensors' names and
    offsets; weights trained further, or another model saved in the same place, change the bytes). Reads a few
    hundred KiB whatever the model's size, where a digest of every byte would read gigabytes."""
    model_dir = Path(model_dir)
    hashed = hashlib.sha256((model_dir / "config.json").read_bytes())
    for path in sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        size = path.stat().st_size
        with open(path, "rb") as weights:
            head = weights.read(DIGEST_BYTES)
            weights.seek(max(size - DIGEST_BYTES, 0))
            tail = weights.read()
        hashed.update(f"{path.name}:{size}:".encode() + head + tail)
    return hashed.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is none to read (missing, or not JSON)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _shape_changes(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """``KEY: SAVED -> CURRENT`` for each shape figure of two models' ``config.json`` that differs; none when either
    is missing (the Trainer's load then says what is wrong)."""
    if saved is None or current is None:
        return []
    return [
        f"{key}: {saved.get(key)} -> {current.get(key)}" for key in SHAPE_KEYS if saved.get(key) != current.get(key)
    ]


def default_merged(adapter_dir: Path) -> Path:
    """Where ``python -m grpo_ext.merge`` writes ``RUN/NAME`` merged: ``RUN/merged/NAME``, beside the run's other
    models, not among its checkpoints."""
    return adapter_dir.parent / "merged" / adapter_dir.name


def is_path(name: str) -> bool:
    """Whether ``name`` can only be a local path: a Hub id is NAME or OWNER/NAME."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


# what to do about a model whose weights or logits are not finite, where the message names it
FROM_A_DIVERGED_RUN = (
    "saved by a run that diverged? Take one saved before (its best_model, or a checkpoint from before the divergence)"
)


def non_finite_tensors(model: Any) -> tuple[list[str], int]:
    """The names of ``model``'s floating-point parameters and buffers that hold a NaN or an infinite value, and how
    many were looked at. Each tensor's largest absolute value is computed where it lives, without a copy and without
    overflow (a sum of squares in float16 would overflow for a sound model), with one synchronization in all."""
    import torch

    named = [
        (name, tensor)
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and tensor.numel() and tensor.device.type != "meta"
    ]
    if not named:
        return [], 0
    device = named[0][1].device  # a model spread over devices (device_map) gathers its figures on the first
    with torch.no_grad():
        largest = [torch.linalg.vector_norm(tensor.detach(), float("inf")).float().to(device) for _, tensor in named]
    finite = torch.isfinite(torch.stack(largest)).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok], len(named)


def listed(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, and how many more."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def non_finite(model: Any) -> str | None:
    """``N of its M tensors hold NaN or infinite values (names)`` when some of ``model``'s weights are not finite."""
    bad, total = non_finite_tensors(model)
    return f"{len(bad)} of its {total} tensors hold NaN or infinite values ({listed(bad)})" if bad else None


def check_chat_template(directory: str, name: str) -> str:
    """``directory`` when its tokenizer has a chat template (every task's prompts are chat messages, which TRL, SFT
    and evaluation render with it); ``ModelUnavailableError`` otherwise, before any weights load."""
    local = Path(directory)
    if (local / "chat_template.jinja").is_file() or (local / "chat_template.json").is_file():
        return directory
    try:
        if json.loads((local / "tokenizer_config.json").read_text()).get("chat_template"):
            return directory
    except (OSError, ValueError):  # no tokenizer_config.json, or not JSON: transformers will say what it lacks
        return directory
    raise ModelUnavailableError(
        f"model.path={name}: its tokenizer has no chat template (tokenizer_config.json has no chat_template, and "
        "there is no chat_template.jinja), and every task's prompts are chat messages: use a model that has one "
        "(an -Instruct model), or add one to that directory"
    )


def torch_dtype(model_dtype: str, hardware_dtype: str) -> str:
    """The dtype to load weights in: the model's own choice, else the hardware profile's."""
    return hardware_dtype if model_dtype == "auto" else model_dtype


def build_tokenizer() -> Any:
    """A byte-level tokenizer: token id ``b`` is byte ``b`` (0-255), then the ChatML specials (256-258)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: byte for byte, symbol in enumerate(_byte_symbols())}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-symbol table, the alphabet of ``tokenizers``' ByteLevel: the symbol of byte ``b`` at ``b``.

    Printable Latin-1 bytes stand for themselves; the others are shifted past 255 so every symbol is printable.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def build_random(cfg: DictConfig) -> Path:
    """Build (once) and cache a random-weight Qwen2 model shaped by ``cfg.architecture``; return its directory."""
    arch = plain(cfg.architecture)
    # A real model's shape with random weights is for memory and speed measurements: stored in bf16, which halves the
    # disk and the time to write and load it (a 7B shape: 15 GB, not 30). The tiny model, which learns, stays fp32.
    dtype = "float32" if cfg.path is None else "bfloat16"
    key = json.dumps({"arch": arch, "seed": cfg.seed, "dtype": dtype, "v": 1}, sort_keys=True)
    key = hashlib.sha256(key.encode()).hexdigest()
    target = cache_root() / "models" / f"{cfg.name}-{key[:12]}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = build_tokenizer()
    if arch["vocab_size"] < len(tokenizer):
        raise ValueError(f"model.architecture.vocab_size must be >= {len(tokenizer)} (the byte tokenizer's size)")
    config = Qwen2Config(
        **arch,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a crash never leaves a half-written model that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built %s (%.2fM parameters) in %s", cfg.name, model.num_parameters() / 1e6, target)
    return target


def from_hub(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    except HFValidationError as err:
        raise ModelUnavailableError(
            f"model.path={repo_id} is neither a local directory nor a Hub model id (OWNER/NAME): {err}"
        ) from err
    hint = (
        "Use model=tiny (built locally, no network) or model.path=/local/dir (a saved model), "
        "or make the Hub reachable"
    )
    if hub_offline():
        raise ModelUnavailableError(f"model {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set. {hint}.")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # any failure to reach the Hub means the same thing to the user
        raise ModelUnavailableError(
            f"cannot reach model {repo_id!r} on the Hugging Face Hub ({err}). {hint}."
        ) from err
    return snapshot_download(repo_id, revision=revision, etag_timeout=HUB_TIMEOUT_S)

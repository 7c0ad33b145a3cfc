"""A saved LoRA adapter merged into its base: ``python -m grpo_ext.merge RUN/checkpoint-50``.

A run with adapters merges its final adapter (``final_model/``) and its best one (``best_model/``) itself. Its
checkpoints hold adapters only, which ``model.path`` cannot load; this writes one as a plain model, by default to
``RUN/merged/checkpoint-50`` (``--out DIR`` elsewhere), for ``grpo_ext.evaluate``, ``grpo_ext.infer``, SFT, GRPO or
vLLM to load like any other. The base is the one named in the adapter's ``adapter_config.json``
(``base_model_name_or_path``: a directory, or a Hub id from the local cache), or ``--base``; the tokenizer the
adapter's directory holds (the Trainer saves it in every checkpoint), else the base's. Weights are merged in the
base's own dtype unless ``--dtype`` says otherwise, on the CPU, never in 4-bit (a QLoRA adapter is merged into the
full-precision base, as at the end of its run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from grpo_ext.backends import models

USAGE_ERROR = 2


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_ext.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter", type=Path, help="a directory with adapter_config.json, e.g. RUN/checkpoint-50")
    parser.add_argument("--out", type=Path, default=None, help="where to write the model (default: RUN/merged/NAME)")
    parser.add_argument("--base", default=None, help="the base model, when not where adapter_config.json says")
    parser.add_argument("--dtype", default="auto", choices=["auto", *models.DTYPES[1:]], help="default: the base's")
    args = parser.parse_args(argv)
    out = args.out or models.default_merged(args.adapter)
    if out.exists():
        sys.stderr.write(f"error: {out} already exists: remove it, or give --out\n")
        return USAGE_ERROR
    try:
        base = base_of(args.adapter, args.base)
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return USAGE_ERROR
    merge(args.adapter, out, base, args.dtype)
    sys.stdout.write(f"{args.adapter} merged into {base}: {out}\nuse it with model.path={out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

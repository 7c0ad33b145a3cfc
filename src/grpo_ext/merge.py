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
import sys
from pathlib import Path

from grpo_ext.backends import models
from grpo_ext.backends.adapters import base_of, merge

USAGE_ERROR = 2


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

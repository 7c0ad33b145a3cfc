"""Completions from a model with transformers' ``generate``, as the held-out evaluations, ``grpo_ext.infer`` and
``grpo_ext.difficulty`` sample them (training generates with TRL, or vLLM)."""

from __future__ import annotations

from typing import Any


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[Any],
    *,
    max_new_tokens: int,
    samples: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float | None = None,
    batch_size: int = 64,
) -> list[list[Completion]]:
    """Completions of chat (or plain) ``prompts``: one greedy each (``samples=0``), or ``samples`` sampled each (at
    ``temperature``, ``top_p``, ``top_k``, ``min_p``; not the model's own generation config)."""
    import torch

    texts = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) if isinstance(p, list) else p
        for p in prompts
    ]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # restored below: a trainer may share it
    per_prompt = max(samples, 1)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p}
    sampling = sampling if samples else {"do_sample": False}
    was_training = model.training
    model.eval()
    out: list[list[Completion]] = []
    try:
        for start in range(0, len(texts), max(1, batch_size // per_prompt)):
            chunk = texts[start : start + max(1, batch_size // per_prompt)]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=per_prompt,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
            generated = [
                _until_eos(row.tolist(), tokenizer.eos_token_id) for row in ids[:, batch["input_ids"].shape[1] :]
            ]
            decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
            made = [Completion(text, row) for text, row in zip(decoded, generated, strict=True)]
            out += [made[i : i + per_prompt] for i in range(0, len(made), per_prompt)]
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return out


class Completion(str):
    """A generated completion: its text (special tokens skipped), which is what every caller reads, carrying
    ``ids``, the tokens generated up to and including the end-of-sequence token, which TRL hands a reward as
    ``completion_ids``."""

    ids: list[int]

    def __new__(cls, text: str, ids: list[int]) -> Completion:
        completion = super().__new__(cls, text)
        completion.ids = ids
        return completion

    def __getnewargs__(self) -> tuple[str, list[int]]:  # type: ignore[override]  # pickled whole, ids included
        return str(self), self.ids


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    """``ids`` up to and including the first ``eos`` (what follows it is padding), as TRL masks a completion."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def load_model(cfg: Any) -> tuple[Any, Any]:
    """The model ``cfg.model`` names (resolved as training would), on ``cfg.hardware.device``, and its tokenizer;
    ``ModelUnavailableError`` for weights that are NaN or infinite."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ext.backends import models

    path = models.resolve(cfg.model)
    dtype = models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(cfg.hardware.device)
    bad = models.non_finite(model)
    if bad:  # greedy decoding of NaN logits gives tokens all the same, and a score of 0 that says nothing of why
        raise models.ModelUnavailableError(
            f"the weights of {path} are not all finite: {bad}. It gives no meaningful completions; a model "
            f"{models.FROM_A_DIVERGED_RUN}"
        )
    return model, AutoTokenizer.from_pretrained(path)

"""Completions without vLLM through a static KV cache with a compiled decode step: a ``rollout_func`` for TRL.

``GRPOTrainer`` without vLLM samples with ``model.generate`` and a ``GenerationConfig`` that TRL 1.16 builds with
``disable_compile=True``, whatever ``generation_kwargs`` say. With the default dynamic cache each decode step is a
few hundred small kernel launches; with ``cache_implementation="static"`` and no compilation every step also
attends over the whole preallocated cache, which is why that setting was slower inside TRL's step on an H100
(9.6 s against 5.0 s, README "Where a step's time goes") while the same generation compiled took 1.0 s alone.

``StaticCacheRollout`` is handed to ``GRPOTrainer(rollout_func=...)`` (TRL's public hook) and generates with the
same model, the same sampling settings taken from the trainer's ``GRPOConfig`` (temperature, top_p, top_k, min_p,
repetition_penalty, ``generation_kwargs``), the same end-of-sequence tokens and the same chat template, through
``generate`` with a static cache. On a CUDA device the decode step is compiled (transformers' ``CompileConfig``),
once for each width of the padded prompt batch: prompts are left-padded to a multiple of ``pad_to`` tokens and never
to less than the widest batch so far, so that a new graph is compiled only when a prompt longer than any before
comes, not for every length. Past ``torch._dynamo``'s recompile limit (8 by default) new widths would decode
uncompiled, the slow path. Completions stop at the first end-of-sequence token, which is kept, as TRL
does. The log-probability of each sampled token under the distribution it was sampled from (after temperature and
truncation) is recorded while decoding and returned, so it can be compared with the trainer's own.

It does not cover what TRL's own path handles and this one does not: images and other multimodal inputs, tools
and environments, and DeepSpeed ZeRO-3 (whose sharded parameters must be gathered for generation).
"""

from __future__ import annotations

from typing import Any


class StaticCacheRollout:
    """``rollout_func(prompts, trainer) -> {"prompt_ids", "completion_ids", "logprobs"}`` for ``GRPOTrainer``.

    Args:
        compile: compile the decode step: ``"auto"`` on CUDA devices only (on the CPU compilation takes longer than
            it saves for small models), or ``True``/``False``.
        pad_to: prompts are left-padded to a multiple of this many tokens, and to no less than the widest batch
            before, bounding how many graphs get compiled.
    """

    def __init__(self, compile: bool | str = "auto", pad_to: int = 64) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be true, false or 'auto', got {compile!r}")
        if pad_to < 1:
            raise ValueError(f"pad_to must be >= 1, got {pad_to}")
        self.compile, self.pad_to = compile, pad_to
        self.width = 0  # the widest padded prompt batch so far
        self.__name__ = "static_cache_rollout"

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        import torch
        from trl.models import unwrap_model_for_generation

        args, tokenizer = trainer.args, trainer.processing_class
        prompt_ids = self.tokenize(prompts, tokenizer, args.chat_template_kwargs or {})
        input_ids, attention_mask = self.left_pad(prompt_ids, tokenizer.pad_token_id, trainer.accelerator.device)
        sampling, generation_config = self.generation_config(trainer)
        recorder = SampledLogprobs()
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as model,
            torch.no_grad(),
        ):
            sequences = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=generation_config,
                logits_processor=[*sampling, recorder],
            )
        completions = sequences[:, input_ids.shape[1] :].tolist()
        logprobs = recorder.gathered(sequences[:, input_ids.shape[1] :]).tolist()
        completion_ids, completion_logprobs = [], []
        for ids, lps in zip(completions, logprobs, strict=True):
            end = next((i + 1 for i, t in enumerate(ids) if t in trainer.eos_token_ids), len(ids))
            completion_ids.append(ids[:end])
            completion_logprobs.append(lps[:end])
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": completion_logprobs}

    @staticmethod
    def tokenize(prompts: list[Any], tokenizer: Any, chat_template_kwargs: dict[str, Any]) -> list[list[int]]:
        """Token ids of each prompt as TRL renders it: chat messages through the chat template with the generation
        prompt added; plain text as it is."""
        out = []
        for prompt in prompts:
            if isinstance(prompt, list):
                encoded = tokenizer.apply_chat_template(
                    prompt, add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs
                )
                out.append(list(encoded["input_ids"]))
            else:
                out.append(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return out

    def left_pad(self, prompt_ids: list[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
        """The prompts as one left-padded batch, its width rounded up to a multiple of ``pad_to`` and no narrower
        than any batch before."""
        import torch

        width = self.width = max(self.width, -(-max(len(ids) for ids in prompt_ids) // self.pad_to) * self.pad_to)
        input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(device), attention_mask.to(device)

    def generation_config(self, trainer: Any) -> tuple[list, Any]:
        """TRL's sampling settings as logits processors of our own (so that the recorder, which must come after
        them, sees the distribution that is sampled from), and the rest of TRL's generation settings with a static
        cache and, where it pays, a compiled decode step."""
        from transformers import (
            CompileConfig,
            GenerationConfig,
            MinPLogitsWarper,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        args, tokenizer = trainer.args, trainer.processing_class
        settings = {
            "max_new_tokens": args.max_completion_length,
            "do_sample": True,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": trainer.eos_token_ids,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "min_p": args.min_p,
            "repetition_penalty": args.repetition_penalty,
            **(args.generation_kwargs or {}),  # as in TRL, generation_kwargs win over the fields above
            "cache_implementation": "static",
        }
        # transformers applies these after any processor passed to generate(), so they are applied here instead, in
        # transformers' own order, and turned off in the config.
        temperature, top_k, top_p, min_p = (settings.pop(key) for key in ("temperature", "top_k", "top_p", "min_p"))
        sampling = [
            *([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []),
            *([TopKLogitsWarper(top_k)] if top_k else []),
            *([TopPLogitsWarper(top_p)] if top_p is not None and top_p < 1.0 else []),
            *([MinPLogitsWarper(min_p)] if min_p is not None else []),
        ]
        settings.update(temperature=1.0, top_k=0, top_p=1.0, min_p=None)
        device = trainer.accelerator.device
        if not (self.compile is True or (self.compile == "auto" and device.type == "cuda")):
            return sampling, GenerationConfig(**settings, disable_compile=True)
        compile_config = CompileConfig(fullgraph=False, dynamic=False)
        compile_config._compile_all_devices = device.type != "cuda"  # transformers compiles on CUDA only otherwise
        return sampling, GenerationConfig(**settings, compile_config=compile_config, disable_compile=False)


class SampledLogprobs:
    """A logits processor, run last, that keeps each step's log-probabilities of the distribution sampled from
    (the scores after temperature and truncation). ``gathered(tokens)`` picks those of the sampled tokens.

    Each call sees the ids so far and the scores for the next token, so the log-probabilities of step ``t`` are
    kept until step ``t + 1`` shows which token was drawn; only one step's vocabulary-wide row per sequence is held.
    """

    def __init__(self) -> None:
        self.steps: list[Any] = []
        self.pending: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.pending is not None:
            self.steps.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def gathered(self, tokens: Any) -> Any:
        """Log-probabilities of ``tokens`` (batch x generated steps), as a float tensor of the same shape."""
        import torch

        steps = self.steps
        if self.pending is not None and len(steps) < tokens.shape[1]:
            steps = [*steps, self.pending.gather(1, tokens[:, len(steps) : len(steps) + 1]).squeeze(1)]
        return torch.stack(steps, dim=1) if steps else torch.zeros(tokens.shape, dtype=torch.float)

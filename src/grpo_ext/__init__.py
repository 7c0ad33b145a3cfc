"""grpo_ext: GRPO fine-tuning on verifiable tasks, as a thin extension layer over TRL's GRPOTrainer.

Entry points: ``python -m grpo_ext.train`` (Hydra), ``grpo_ext.sft``, ``grpo_ext.evaluate``, ``grpo_ext.infer``,
``python -m grpo_ext.score REWARD FILE.jsonl``, ``grpo_ext.summarize`` and ``grpo_ext.plot``.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported under peft and transformers by every entry point) warns at import, on CPUs with AVX512-BF16,
# that it could not fetch an optional CPU kernel from the Hub ("Failed to load CPU gemm_4bit_forward ..."): the first
# line of every run's output, alarming and about a 4-bit CPU path that training here does not take. Only that
# message is dropped; the logger's others still show.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")
)

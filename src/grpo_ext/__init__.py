"""grpo_ext: GRPO fine-tuning on verifiable tasks, as a thin extension layer over TRL's GRPOTrainer.

Entry points: ``python -m grpo_ext.train`` (Hydra), ``grpo_ext.sft``, ``grpo_ext.evaluate``, ``grpo_ext.infer``,
``python -m grpo_ext.score REWARD FILE.jsonl``, ``grpo_ext.summarize`` and ``grpo_ext.plot``.
"""

__version__ = "0.1.0"

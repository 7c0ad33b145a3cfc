"""grpo_ext: GRPO fine-tuning on verifiable tasks, as a thin extension layer over TRL's GRPOTrainer.

Entry points: ``python -m grpo_ext.train`` (Hydra) and ``python -m grpo_ext.score REWARD FILE.jsonl``.
"""

__version__ = "0.1.0"

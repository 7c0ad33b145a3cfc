"""Rows for the word-count example at the size a warm start needs: ``python examples/word_count_rows.py OUT_DIR``.

Writes ``OUT_DIR/train.jsonl`` and ``OUT_DIR/eval.jsonl``, in the shape of ``examples/word_count.jsonl`` (a prompt,
the target ``words`` and the ``topic``) plus a ``reference``: a sentence of exactly ``words`` words, for
``grpo_ext.sft``. Targets run from ``--min-words`` to ``--max-words``; the same seed writes the same files. The
reference sentences are words drawn from a short list, which a model of 1.6M parameters can learn to write; how many
of them to write is what it has to get right.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS = ["rain", "the sea", "a cat", "bread", "snow", "a train", "the moon", "music", "a garden", "fire", "winter",
          "a river", "books", "the wind", "coffee", "a city"]  # fmt: skip
WORDS = ["the", "a", "old", "red", "sun", "sky", "day", "cold", "warm", "slow", "soft", "dark", "light",
         "falls", "sings", "runs", "waits", "glows", "deep", "quiet", "blue", "green", "night", "home", "sound",
         "long"]  # fmt: skip


def row(rng: random.Random, min_words: int, max_words: int, max_reference_words: int) -> dict[str, object]:
    topic, words = rng.choice(TOPICS), rng.randint(min_words, max_words)
    sentence = " ".join(rng.choice(WORDS) for _ in range(words))
    reference = sentence[0].upper() + sentence[1:] + "." if words <= max_reference_words else None
    return {"prompt": f"Write {words} words about {topic}.", "words": words, "topic": topic, "reference": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=8000, help="training rows (default 8000)")
    parser.add_argument("--eval", type=int, default=500, help="held-out rows (default 500)")
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--max-words", type=int, default=12)
    parser.add_argument(
        "--max-reference-words",
        type=int,
        default=None,
        help="rows asking for more words have no reference (default: every row has one)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.min_words <= args.max_words:
        parser.error(f"need 1 <= --min-words <= --max-words, got {args.min_words} and {args.max_words}")
    rng = random.Random(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", args.train), ("eval", args.eval)):
        rows = [row(rng, args.min_words, args.max_words, args.max_reference_words or args.max_words)
                for _ in range(count)]  # fmt: skip
        (args.out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{args.out_dir / name}.jsonl: {count} rows")


if __name__ == "__main__":
    main()

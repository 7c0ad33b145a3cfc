"""A user's reward module that imports in the trainer's process but raises in a fresh interpreter started with
``-c`` (as multiprocessing starts its forkserver): an environment the module depends on, missing there."""

import sys

if sys.argv[:1] == ["-c"]:
    raise RuntimeError("this module needs the trainer's environment")


def score(completions, **kwargs):
    return [1.0 for _ in completions]

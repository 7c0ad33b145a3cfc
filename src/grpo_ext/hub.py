"""The Hugging Face Hub as models and datasets are fetched from it: fail in seconds when it does not answer, and read
only the local cache when ``HF_HUB_OFFLINE`` asks for it."""

from __future__ import annotations

import os

HUB_TIMEOUT_S = 5.0  # a Hub that does not answer within this fails the run in seconds, not after retries


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")

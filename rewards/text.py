"""Helpers shared by rewards: turning one completion, in any of TRL's forms, into text."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, or the content of the last message of a chat completion.

    Anything else (``None``, numbers, malformed messages) becomes an empty string, so a reward never raises on it.
    Text comes back as a plain ``str`` (a ``str`` subclass, such as a generated completion carrying its token ids,
    is not one every consumer takes: the sandbox's request format refuses it).
    """
    if isinstance(completion, str):
        return str(completion)
    if isinstance(completion, list) and completion:
        last = completion[-1]
        if isinstance(last, dict):
            content = last.get("content")
            if isinstance(content, str):
                return str(content)
            if isinstance(content, list):  # multimodal form: [{"type": "text", "text": ...}, ...]
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""

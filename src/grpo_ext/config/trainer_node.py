"""The ``trainer`` node: ``trl.GRPOConfig``'s init fields as a Hydra schema, read from the installed TRL.

Every field of whatever GRPOConfig the installed release has is reachable as ``trainer.FIELD=VALUE``, typed as
closely as OmegaConf can check, with TRL's default. Importing TRL takes several seconds (transformers, peft and
bitsandbytes under it), so the fields are kept in a small JSON file in the cache (``$GRPO_EXT_CACHE``), keyed by
the releases and the files that define them: ``--help``, ``--cfg`` and a misspelled key answer in about a second,
and TRL is imported only where a run needs it (or when it changed).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import sys
import tempfile
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from grpo_ext.backends.models import cache_root
from grpo_ext.config import plain

log = logging.getLogger(__name__)


def _node_type(annotation: Any) -> Any:
    """The closest type OmegaConf can check for a GRPOConfig field annotation; ``Any`` when there is none."""
    primitives = (bool, int, float, str)
    if annotation in primitives:
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) < len(args)
        enums = [a for a in non_none if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and str in non_none and len(non_none) == 2:  # e.g. SchedulerType | str: typed as its string value
            return str | None if optional else str
        if len(non_none) == 1:
            inner = _node_type(non_none[0])
            return Any if inner is Any else inner | None
        return Any
    if typing.get_origin(annotation) is list and args and args[0] in primitives:
        return list[args[0]]  # type: ignore[valid-type]  # a type built at run time
    return Any


def _node_default(f: dataclasses.Field) -> Any:
    """A GRPOConfig field's default as the ``trainer`` node holds it (an enum as its value); ``MISSING`` if none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default.value if isinstance(f.default, enum.Enum) else f.default


@functools.cache
def trainer_schema() -> type:
    """A dataclass with one field per ``trl.GRPOConfig`` init field, same defaults, checkable types."""
    return schema_of(_read_trainer_fields() or _write_trainer_fields())


def schema_of(fields: list[tuple[str, str, Any]]) -> type:
    """The ``trainer`` node's dataclass from ``(name, type as text, default)`` fields, cached or read from TRL."""
    return dataclasses.make_dataclass(
        "TrainerConfig", [(name, _decode_type(kind), _default(value)) for name, kind, value in fields]
    )


def _grpo_config_fields() -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` of each ``trl.GRPOConfig`` init field, as the ``trainer`` node holds it."""
    from trl import GRPOConfig

    return [
        (f.name, _encode_type(_node_type(f.type)), _node_default(f)) for f in dataclasses.fields(GRPOConfig) if f.init
    ]


def _trainer_fields_file() -> Path:
    """One file per Python environment, so that several venvs can share the cache."""
    return cache_root() / f"trainer_fields-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]}.json"


def _trainer_fields_key(sources: list[str]) -> dict[str, Any]:
    """What the cached fields depend on: the releases, our encoding of them, and the files that define them."""
    stats = {}
    for source in sources:
        try:
            stat = os.stat(source)
        except OSError:
            return {}  # a file that is gone: never equal to a stored key
        stats[source] = [stat.st_mtime_ns, stat.st_size]
    return {
        "python": sys.version,
        "trl": importlib.metadata.version("trl"),
        "transformers": importlib.metadata.version("transformers"),
        "encoding": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "sources": stats,
    }


def _read_trainer_fields() -> list[tuple[str, str, Any]] | None:
    """The cached fields, or ``None`` when there are none or they were written for other files or releases."""
    try:
        stored = json.loads(_trainer_fields_file().read_text())
        if stored["key"] == _trainer_fields_key(list(stored["key"]["sources"])):
            fields = [(name, kind, value) for name, kind, value in stored["fields"]]
            for _, kind, _ in fields:
                _decode_type(kind)  # a file edited by hand fails here, not at composition
            return fields
    except (OSError, ValueError, KeyError, TypeError, importlib.metadata.PackageNotFoundError):
        pass  # read TRL instead, and store what it says
    return None


def _write_trainer_fields() -> list[tuple[str, str, Any]]:
    """Read the fields from TRL itself and store them for the next command (unless a default is not plain JSON)."""
    from trl import GRPOConfig

    fields = _grpo_config_fields()
    key = _trainer_fields_key([inspect.getfile(c) for c in GRPOConfig.__mro__ if c is not object])
    try:
        text = json.dumps({"key": key, "fields": fields})
    except (TypeError, ValueError):
        return fields  # a default JSON cannot hold: read TRL every time
    if repr(json.loads(text)["fields"]) != repr([list(f) for f in fields]):
        return fields  # a default JSON would change (a tuple for a list): read TRL every time
    target = _trainer_fields_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(text)
        os.replace(tmp.name, target)  # whole or not at all, whatever runs beside us
    except OSError as err:
        log.debug("could not cache GRPOConfig's fields in %s: %s", target, err)
    return fields


_PRIMITIVES = {"bool": bool, "int": int, "float": float, "str": str}


def _encode_type(node_type: Any) -> str:
    """``int``, ``str?`` (optional), ``list[float]``, ``any``: the node types ``_node_type`` returns, as text."""
    if node_type is Any:
        return "any"
    if node_type in _PRIMITIVES.values():
        return node_type.__name__
    args = typing.get_args(node_type)
    if typing.get_origin(node_type) is list:
        return f"list[{_encode_type(args[0])}]"
    if type(None) in args and len(args) == 2:
        return _encode_type(next(a for a in args if a is not type(None))) + "?"
    raise ValueError(f"no text form for the node type {node_type!r}")


def _decode_type(text: str) -> Any:
    if text.endswith("?"):
        return _decode_type(text[:-1]) | None
    if text.startswith("list[") and text.endswith("]"):
        return list[_decode_type(text[5:-1])]  # type: ignore[misc]  # a type built at run time
    if text == "any":
        return Any
    if text not in _PRIMITIVES:
        raise ValueError(f"unknown node type {text!r}")
    return _PRIMITIVES[text]


def _default(value: Any) -> dataclasses.Field:
    if value is dataclasses.MISSING:
        return field(default=MISSING)
    if isinstance(value, (list, dict)):
        return field(default_factory=functools.partial(copy.deepcopy, value))  # type: ignore[arg-type]
    return field(default=value)


def grpo_config_defaults() -> dict[str, Any]:
    """GRPOConfig's defaults as they appear in the ``trainer`` node."""
    return plain(OmegaConf.structured(trainer_schema()))


def trainer_overrides(trainer: DictConfig) -> dict[str, Any]:
    """The ``trainer`` values that differ from GRPOConfig's defaults, resolved: what to pass to ``GRPOConfig``.

    Passing only the differences leaves every untouched field to TRL's own defaults and post-init logic
    (deprecated aliases, values derived from others), exactly as if the user had called GRPOConfig by hand.
    """
    values = plain(trainer)
    defaults = grpo_config_defaults()
    return with_current_names({key: value for key, value in values.items() if value != defaults[key]})


# transformers 5.2x renamed these TrainingArguments and warns (FutureWarning) whenever an old name holds a value,
# which TRL 1.16 always gives it (its gradient_checkpointing defaults to True): every run warned.
RENAMED = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


def with_current_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` (for a TRL config) with each renamed argument's value under its new name, where the installed
    transformers has it and the new name was not given; the same setting, without the deprecation warning. A new
    name given explicitly wins, as in transformers."""
    defaults = grpo_config_defaults()
    for old, new in RENAMED:
        if new in defaults and kwargs.get(new) is None:
            kwargs[new] = kwargs.get(old, defaults[old])
            kwargs[old] = None  # transformers copies the new name back to it
    return kwargs

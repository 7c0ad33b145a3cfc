"""The run's configuration: the schemas Hydra composes against, the ``trainer`` node derived from the installed
TRL, and the one validation pass from a composed config to the description of a run."""

from typing import Any, cast

from omegaconf import OmegaConf


def plain(node: Any, resolve: bool = True) -> dict[str, Any]:
    """A config node (or a loaded YAML file) as plain Python dicts and lists, interpolations resolved."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=resolve))


def plain_list(node: Any) -> list[Any]:
    """A list node (``task.rewards``) as plain Python lists and dicts, interpolations resolved."""
    return cast(list[Any], OmegaConf.to_container(node, resolve=True))

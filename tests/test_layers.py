"""Dependencies point one way: the commands use the library, the library uses the tasks and the rewards, and the
rewards (torch-free, imported by worker processes) import nothing of the rest. Every import is read from the source,
those inside functions included, so that a lazy import cannot cross a layer unseen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"train", "sft", "evaluate", "infer", "difficulty", "score", "summarize", "plot", "merge"}
LIBRARY = {"config", "run", "monitor", "backends"}
LEAVES = {"errors", "hub"}  # imported by the library and the tasks; they import nothing of grpo_ext


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (the rewards' source sits in rewards/, see pyproject)."""
    found = {}
    for root, package in ((REPO / "src" / "grpo_ext", "grpo_ext"), (REPO / "rewards", "grpo_ext.rewards")):
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def layer(module: str) -> str:
    """``command``, ``library``, ``tasks``, ``rewards``, ``leaf`` or ``package`` (``grpo_ext`` itself, ``conf``)."""
    first = module.split(".")[1] if "." in module else ""
    if first in COMMANDS:
        return "command"
    if first in LIBRARY:
        return "library"
    if first in LEAVES:
        return "leaf"
    return first if first in ("tasks", "rewards") else "package"


def imported(path: Path, module: str) -> set[str]:
    """The grpo_ext modules ``path`` imports, anywhere in it (``from grpo_ext.x import y`` counts as ``x.y`` when
    ``y`` is a module)."""
    names = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known}
    return {n for n in names if n.startswith("grpo_ext.") and n != module}


# What each layer may import, besides itself.
ALLOWED = {
    "command": {"library", "tasks", "rewards", "leaf", "package"},
    "library": {"tasks", "rewards", "leaf", "package"},
    "tasks": {"rewards", "leaf"},
    "rewards": set(),
    "leaf": set(),
}


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer(m) != "package"))
def test_imports_point_down_the_layers(module):
    path = modules()[module]
    own = layer(module)
    crossing = sorted(
        name
        for name in imported(path, module)
        if layer(name) != own and layer(name) not in ALLOWED[own] and not name.startswith("grpo_ext.conf")
    )
    assert not crossing, f"{module} ({own}) imports {crossing}, against the layers"


def test_no_command_imports_another():
    for module, path in modules().items():
        if layer(module) == "command":
            others = {n for n in imported(path, module) if layer(n) == "command"}
            assert not others, f"{module} imports the commands {sorted(others)}: move what they share into the library"


def test_the_layers_cover_every_module():
    """A new top-level module must be placed in a layer here (a command, or a subpackage of the library)."""
    top = {m.split(".")[1] for m in modules() if m.count(".") >= 1}
    assert top <= COMMANDS | LIBRARY | LEAVES | {"tasks", "rewards", "conf"}, sorted(top)

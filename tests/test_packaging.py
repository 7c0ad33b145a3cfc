"""What `pip install .` users get: a non-editable install carries every config and every reward module, and
importing the package quiets only what it says it quiets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_config_group_and_reward_module(tmp_path):
    source = tmp_path / "source"  # a copy: a stale build/ directory in the checkout would hide missing files
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "outputs", "multirun"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("grpo_ext-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"grpo_ext/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    expected |= {f"grpo_ext/rewards/{p.name}" for p in (ROOT / "rewards").glob("*.py")}
    assert len(expected) > 40
    assert sorted(expected - names) == []


def test_importing_grpo_ext_drops_only_bitsandbytes_failed_kernel_fetch_warning():
    import logging

    import grpo_ext  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def shown(message: str) -> bool:
        return bool(logger.filter(logger.makeRecord(logger.name, logging.WARNING, "ops.py", 1, message, (), None)))

    assert not shown("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...")
    assert shown("any other warning of bitsandbytes' CPU backend")

"""What the benchmarks that train share: running one of the project's commands as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def run(args: list[str], log: Path) -> float:
    """Run ``python -m ARGS`` with its output in ``log``; return the wall time; exit on failure."""
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(args[:2])} failed (exit {code}); see {log}")
    return time.monotonic() - started


def ended_well(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` ended well (its ``status.json`` says ok)."""
    status = run_dir / "status.json"
    return status.is_file() and json.loads(status.read_text()).get("status") == "ok"

"""A stand-in trainer for launch/vllm_server.sh tests: records its argv and GPUs, checks that the server answers
/health at the port it was given, then exits with FAKE_TRAINER_EXIT (default 0) or sleeps (FAKE_TRAINER_SLEEP)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request


def main() -> None:
    argv = sys.argv[1:]
    port = next(a.split("=", 1)[1] for a in argv if a.startswith("hardware.vllm.port="))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
        health = reply.status
    record = {"argv": argv, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "health": health}
    with open(os.environ["FAKE_TRAINER_RECORD"], "w") as out:
        json.dump(record, out)
    time.sleep(float(os.environ.get("FAKE_TRAINER_SLEEP", 0)))
    sys.exit(int(os.environ.get("FAKE_TRAINER_EXIT", 0)))


if __name__ == "__main__":
    main()

"""A stand-in for the ``vllm`` executable (vLLM cannot be installed here): ``vllm serve MODEL --host H --port P ...``
serves ``GET /health`` on loopback the way the real server does, or misbehaves as ``FAKE_VLLM`` asks.

FAKE_VLLM (comma-separated):
  healthy         answer /health 200 (the default)
  slow=S          start listening only after S seconds
  never           listen, but answer /health 503 forever
  silent          never listen at all
  die=S           exit with code 3 after S seconds (before or after becoming healthy), with an error line
  ignore_term     ignore SIGTERM (only SIGKILL stops it)
  children=N      fork N sleeping children in its process group first (cleanup must take them too)
FAKE_VLLM_RECORD: a file where the argv and the relevant environment are written as JSON on start.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import threading
import time


def main() -> None:
    argv = sys.argv[1:]
    behaviour = dict(item.partition("=")[::2] for item in os.environ.get("FAKE_VLLM", "healthy").split(","))
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "VLLM_SERVER_DEV_MODE")}
        with open(record, "w") as out:
            json.dump({"argv": argv, "env": env, "pid": os.getpid(), "pgid": os.getpgid(0)}, out)
    if argv[:1] != ["serve"]:
        sys.exit(f"fake vllm: only `serve` is supported, got {argv}")
    host, port = argv[argv.index("--host") + 1], int(argv[argv.index("--port") + 1])
    if "ignore_term" in behaviour:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _ in range(int(behaviour.get("children", 0))):
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
            os._exit(0)
    print(f"fake vllm: serving {argv[1]} on {host}:{port}", flush=True)
    if "die" in behaviour:
        threading.Timer(
            float(behaviour["die"]), lambda: (print("fake vllm: CUDA error", flush=True), os._exit(3))
        ).start()
    if "silent" in behaviour:
        time.sleep(600)
    time.sleep(float(behaviour.get("slow", 0)))
    status = 503 if "never" in behaviour else 200

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    http.server.HTTPServer((host, port), Health).serve_forever()


if __name__ == "__main__":
    main()

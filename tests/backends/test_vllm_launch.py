"""vLLM generation paths without vLLM: the managed server (``grpo_ext.backends.vllm_server``) and
``launch/vllm_server.sh`` against a fake ``vllm`` executable on PATH that serves /health on loopback, slowly,
never, or dying; the choice of generation path from the installed vLLM's version (a fake distribution on
sys.path)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from grpo_ext.backends import hardware, vllm_server
from grpo_ext.errors import GrpoExtError
from support import REPO, TESTS, compose_config

H100 = hardware.Gpu("H100", 79.2)
T4 = hardware.Gpu("Tesla T4", 14.6, bf16=False)

LAUNCHER = REPO / "launch" / "vllm_server.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pgid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_alive(pgid)


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A ``vllm`` executable first on PATH (exec'ing tests/fake_vllm.py); returns where it records its start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TESTS / "fake_vllm.py"}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "vllm_record.json"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    return record


def server_cfg(**values):
    vllm = {"host": "127.0.0.1", "port": free_port(), "group_port": free_port(), "startup_timeout_s": 20.0,
            "server_memory_utilization": 0.9, "extra_args": [], "server_gpu": 1}  # fmt: skip
    return OmegaConf.create({**vllm, **values})


def start(vllm, tmp_path):
    command = vllm_server.serve_command("/models/m", vllm, "bfloat16", "0.26.0")
    return vllm_server.running(command, vllm, 1, tmp_path / "server.log")


def test_serve_command_carries_the_flags_trl_needs():
    vllm = server_cfg(extra_args=["--max-model-len", "4096"])
    command = vllm_server.serve_command("/models/m", vllm, "bfloat16", "0.26.0")
    assert command[:3] == ["vllm", "serve", "/models/m"]
    joined = " ".join(command)
    flags = ['--weight-transfer-config {"backend": "nccl"}', "--logprobs-mode processed_logprobs", "--max-logprobs -1",
             f"--port {vllm.port}", "--dtype bfloat16", "--gpu-memory-utilization 0.9"]  # fmt: skip
    for flag in flags:
        assert flag in joined
    assert command[-2:] == ["--max-model-len", "4096"]
    assert "--enable-scale-out" not in command
    assert "--enable-scale-out" in vllm_server.serve_command("/m", vllm, "bfloat16", "0.30.1+cu129")


def test_a_slow_server_is_awaited_then_stopped_with_its_whole_group(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "slow=1,children=3")
    vllm = server_cfg()
    with start(vllm, tmp_path) as server:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{vllm.port}/health", timeout=5) as reply:
            assert reply.status == 200
        started = json.loads(fake_vllm.read_text())
        assert started["env"] == {"CUDA_VISIBLE_DEVICES": "1", "VLLM_SERVER_DEV_MODE": "1"}
        assert started["pgid"] == server.pid  # its own process group, so that stopping it takes its children too
        assert group_alive(server.pid)
    assert server.returncode is not None
    assert wait_gone(server.pid), "the server's children (which ignore SIGTERM) survived"


def test_a_server_that_dies_while_starting_is_reported_with_its_log(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "die=0.3,silent")
    began = time.monotonic()
    with pytest.raises(
        vllm_server.ServerError, match=r"^the vLLM server exited with code 3 while starting(.|\n)*CUDA"
    ):
        with start(server_cfg(), tmp_path):
            pass
    assert time.monotonic() - began < 10


@pytest.mark.parametrize("behaviour", ["never", "silent"])
def test_a_server_that_never_becomes_healthy_is_stopped_at_the_deadline(fake_vllm, tmp_path, monkeypatch, behaviour):
    monkeypatch.setenv("FAKE_VLLM", f"{behaviour},children=2")
    vllm = server_cfg(startup_timeout_s=2.0)
    began = time.monotonic()
    with pytest.raises(vllm_server.ServerError, match=r"did not answer .*/health within 2 s"):
        with start(vllm, tmp_path):
            pass
    assert 2.0 <= time.monotonic() - began < 8
    assert not group_alive(json.loads(fake_vllm.read_text())["pgid"])


def test_a_server_ignoring_sigterm_is_killed_after_the_grace_period(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "ignore_term")
    monkeypatch.setattr(vllm_server, "STOP_GRACE_S", 1.0)
    began = time.monotonic()
    with start(server_cfg(), tmp_path) as server:
        pass
    assert server.returncode == -signal.SIGKILL
    assert time.monotonic() - began < 10


def test_a_server_that_dies_during_training_stops_the_run_with_its_exit_and_log(fake_vllm, tmp_path, monkeypatch):
    """TRL's client sees only a refused connection (requests' ConnectionError, or a failed request): the run must say
    that the server exited, and show why from its log."""
    import requests

    monkeypatch.setenv("FAKE_VLLM", "die=1.5")
    with pytest.raises(vllm_server.ServerError) as err:
        with start(server_cfg(), tmp_path) as server:
            pgid = server.pid
            time.sleep(1.6)  # the client's request fails as the server goes down, before its exit is reaped
            raise requests.exceptions.ConnectionError("Connection refused")
    message = str(err.value)
    assert message.startswith("the vLLM server exited with code 3 during training, which stopped the run "
                              "(ConnectionError: Connection refused). Run the same command")  # fmt: skip
    assert "fake vllm: CUDA error" in message and isinstance(err.value.__cause__, requests.exceptions.ConnectionError)
    assert wait_gone(pgid)


def test_a_lost_connection_is_named_and_other_errors_pass_through(fake_vllm, tmp_path):
    with pytest.raises(
        vllm_server.ServerError, match=r"lost its connection to the vLLM server, which is still running"
    ):
        with start(server_cfg(), tmp_path):
            raise ConnectionResetError("reset by peer")
    with pytest.raises(ValueError, match="a bug of the run's own"):
        with start(server_cfg(), tmp_path):
            raise ValueError("a bug of the run's own")


@pytest.mark.parametrize("key", ["port", "group_port"])
def test_a_port_in_use_is_refused_before_anything_starts(fake_vllm, tmp_path, key):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        vllm = server_cfg(**{key: taken.getsockname()[1]})
        with pytest.raises(
            vllm_server.ServerError, match=rf"port {vllm[key]} on 127.0.0.1 is already in use \(hardware.vllm.{key}\)"
        ):
            with start(vllm, tmp_path):
                pass
    assert not fake_vllm.exists()  # never started


def test_a_missing_vllm_executable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(vllm_server.ServerError, match="cannot run 'vllm'.*vllm extra"):
        with start(server_cfg(), tmp_path):
            pass


def test_the_server_dies_with_a_run_that_is_killed_outright(fake_vllm, tmp_path, monkeypatch):
    vllm = server_cfg()
    code = (
        "import sys, time; from omegaconf import OmegaConf; from grpo_ext.backends import vllm_server\n"
        f"vllm = OmegaConf.create({OmegaConf.to_container(vllm)!r})\n"
        "with vllm_server.running(['vllm', 'serve', 'm', '--host', vllm.host, '--port', str(vllm.port)], vllm, 0,"
        f" vllm_server.Path({str(tmp_path / 'server.log')!r})):\n"
        "    print('ready', flush=True); time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout.readline().strip() == "ready"
        pgid = json.loads(fake_vllm.read_text())["pgid"]
        run.kill()  # SIGKILL: no cleanup code of ours runs
        run.wait()
        assert wait_gone(pgid), "the vLLM server outlived the run that started it"
    finally:
        run.kill()


def test_server_gpu_must_exist_beside_the_training_gpu():
    assert vllm_server.server_gpu(OmegaConf.create({"server_gpu": -1}), 4) == 3
    assert vllm_server.server_gpu(OmegaConf.create({"server_gpu": 1}), 2) == 1
    with pytest.raises(vllm_server.ServerError, match="server_gpu=1 but 1 GPU"):
        vllm_server.server_gpu(OmegaConf.create({"server_gpu": 1}), 1)


SERVED = ["hardware=gpu2_vllm_server"]


def served_on_t4s(*overrides: str):
    """The config ``hardware=auto`` composes on two T4s with vLLM installed (fp16 mixed precision)."""
    cfg = compose_config([*SERVED, *overrides])
    hardware.fp16_instead(cfg, T4.name)
    return cfg


@pytest.mark.parametrize(
    "t4s,overrides,gpu,dtype",
    [
        (False, [], H100, "bfloat16"),  # the trainer's bf16
        (True, [], T4, "float16"),  # fp16 mixed precision over float32 weights: not float32
        (True, ["peft=lora"], T4, "float16"),  # float16 weights under the adapters
        (False, [], T4, "float16"),  # bf16 forced on a T4, which vLLM refuses there
        (False, ["trainer.bf16=false", "hardware.dtype=float32"], H100, "float32"),  # no mixed precision: the weights'
        (True, ["hardware.vllm.dtype=float32"], T4, "float32"),  # asked for
    ],
)
def test_a_server_generates_in_the_precision_the_trainer_computes_in(t4s, overrides, gpu, dtype):
    cfg = served_on_t4s(*overrides) if t4s else compose_config([*SERVED, *overrides])
    assert vllm_server.server_dtype(cfg, gpu) == dtype


def test_bf16_asked_of_a_server_gpu_without_it_is_refused_before_the_server_starts(fake_vllm, monkeypatch):
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [T4, T4])
    cfg = served_on_t4s("hardware.vllm.dtype=bfloat16", f"hardware.vllm.port={free_port()}")
    with pytest.raises(
        vllm_server.ServerError, match=r"hardware.vllm.dtype=bfloat16, and the server's GPU \(Tesla T4\)"
    ):
        with vllm_server.for_run(cfg, "/models/m", REPO):
            pass
    assert not fake_vllm.exists()


def test_a_managed_server_on_t4s_is_started_in_float16(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [T4, T4])
    monkeypatch.setattr(hardware, "vllm_version", lambda: "0.26.0")
    ports = [f"hardware.vllm.port={free_port()}", f"hardware.vllm.group_port={free_port()}"]
    cfg = served_on_t4s(*ports, "hardware.vllm.startup_timeout_s=20")
    assert cfg.hardware.dtype == "float32"  # what the trainer loads, and what the server was started in before
    with vllm_server.for_run(cfg, "/models/m", tmp_path):
        argv = json.loads(fake_vllm.read_text())["argv"]
    assert argv[argv.index("--dtype") + 1] == "float16"


# which generation path a profile gets, from the installed vLLM


@pytest.fixture
def installed_vllm(tmp_path, monkeypatch):
    """Make ``importlib.metadata`` see a vLLM distribution of the version given (metadata only, no code)."""

    def install(version: str) -> None:
        dist = tmp_path / "site" / f"vllm-{version}.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))

    return install


def test_without_vllm_the_gpu_profiles_use_trls_generate_and_server_mode_names_the_extra(caplog):
    caplog.set_level("INFO")
    assert hardware.generation_settings(compose_config(["hardware=gpu_24gb"])) == {}
    assert "vLLM is not installed" in caplog.text
    for profile in ("gpu2_vllm_server", "multigpu"):
        with pytest.raises(ValueError, match=r"needs vLLM: vLLM is not installed; install the vllm extra"):
            hardware.generation_settings(compose_config([f"hardware={profile}"]))


def test_a_vllm_outside_trls_range_is_refused_with_the_range(installed_vllm):
    installed_vllm("0.40.0")
    with pytest.raises(ValueError, match=r"vLLM 0.40.0 is installed but TRL 1.16 supports 0.22.0 to 0.31.0"):
        hardware.generation_settings(compose_config(["hardware=gpu_80gb", "hardware.vllm.mode=colocate"]))
    assert hardware.generation_settings(compose_config(["hardware=gpu_80gb"])) == {}  # auto falls back


def test_a_supported_vllm_is_colocated_on_one_gpu_and_served_on_two(installed_vllm):
    installed_vllm("0.26.0+cu129")
    colocated = hardware.generation_settings(compose_config(["hardware=gpu_10gb"]))
    assert colocated == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.25}
    served = hardware.generation_settings(compose_config(["hardware=gpu2_vllm_server", "hardware.vllm.port=8100"]))
    assert served["vllm_mode"] == "server" and served["vllm_server_port"] == 8100
    assert served["vllm_group_port"] == 51216 and served["vllm_server_host"] == "127.0.0.1"
    with pytest.raises(ValueError, match="peft=qlora cannot be used with hardware.vllm.mode=server.*lossy"):
        hardware.generation_settings(compose_config(["hardware=gpu2_vllm_server", "peft=qlora"]))
    assert hardware.generation_settings(compose_config(["hardware=gpu_10gb", "peft=qlora"])) == {}  # auto: plain


@pytest.mark.parametrize(
    "override,message",
    [
        ("hardware.vllm.mode=fast", r"hardware.vllm.mode must be one of \['off', 'auto', 'colocate', 'server'\]"),
        ("hardware.vllm.port=70000", r"hardware.vllm.port must be a TCP port \(1-65535\), got 70000"),
        ("hardware.vllm.group_port=8000", "hardware.vllm.port and hardware.vllm.group_port must differ"),
        (
            "hardware.vllm.dtype=fp16",
            r"hardware.vllm.dtype must be one of \['auto', 'bfloat16', 'float16', 'float32'\]",
        ),
    ],
)
def test_bad_vllm_settings_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        hardware.generation_settings(compose_config(["hardware=gpu2_vllm_server", override]))


def test_train_refuses_a_server_profile_without_vllm_naming_the_extra(tmp_path, monkeypatch):
    from grpo_ext.train import train
    from support import FAST

    monkeypatch.setattr(hardware, "visible_gpus", lambda: [H100, H100])  # two GPUs, and no vLLM
    fast = [o for o in FAST if o != "hardware=cpu"]
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*fast, "hardware=gpu2_vllm_server"]), tmp_path)
    assert "config error: hardware.vllm.mode=server needs vLLM: vLLM is not installed" in stop.value.report()


# launch/vllm_server.sh


def launch(tmp_path, env: dict[str, str], *overrides: str, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MODEL": "/models/m", "PORT": str(free_port()), "GROUP_PORT": str(free_port()),
                "SERVER_LOG": str(tmp_path / "server.log"), "FAKE_TRAINER_RECORD": str(tmp_path / "trainer.json"),
                "TRAIN_CMD": f"{sys.executable} {TESTS / 'fake_trainer.py'}", **env}  # fmt: skip
    return subprocess.run(["bash", str(LAUNCHER), *overrides], env=full_env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_launcher_serves_trains_on_the_other_gpu_and_stops_the_server(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "slow=1,children=2")
    result = launch(tmp_path, {"FAKE_TRAINER_EXIT": "0", "VLLM_GPU": "1", "TRAIN_GPUS": "0"}, "trainer.max_steps=5")
    assert result.returncode == 0, result.stderr
    trainer = json.loads((tmp_path / "trainer.json").read_text())
    assert trainer["health"] == 200 and trainer["gpus"] == "0"
    assert "model.path=/models/m" in trainer["argv"] and "hardware.vllm.managed=false" in trainer["argv"]
    assert trainer["argv"][-1] == "trainer.max_steps=5"
    server = json.loads(fake_vllm.read_text())
    assert server["env"] == {"CUDA_VISIBLE_DEVICES": "1", "VLLM_SERVER_DEV_MODE": "1"}
    assert "processed_logprobs" in server["argv"] and '{"backend": "nccl"}' in server["argv"]
    assert wait_gone(server["pgid"])


def test_launcher_passes_on_the_trainers_failure_and_still_stops_the_server(fake_vllm, tmp_path):
    result = launch(tmp_path, {"FAKE_TRAINER_EXIT": "7"})
    assert result.returncode == 7
    assert wait_gone(json.loads(fake_vllm.read_text())["pgid"])


def test_launcher_names_a_server_that_died_during_training(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "die=1")
    result = launch(tmp_path, {"FAKE_TRAINER_EXIT": "1", "FAKE_TRAINER_SLEEP": "2"})
    assert result.returncode == 1
    assert "the vLLM server exited with code 3 during training; end of" in result.stderr
    assert "fake vllm: CUDA error" in result.stderr
    healthy = launch(tmp_path, {"FAKE_TRAINER_EXIT": "1"})  # the trainer's own failure: nothing said of the server
    assert healthy.returncode == 1 and "during training" not in healthy.stderr


def test_a_lost_connection_to_a_server_the_run_did_not_start_is_named():
    import requests

    cfg = compose_config(["hardware=gpu2_vllm_server", "hardware.vllm.managed=false", "hardware.vllm.port=8123"])
    with pytest.raises(vllm_server.ServerError) as err:
        with vllm_server.for_run(cfg, "/models/m", REPO):
            raise requests.exceptions.ConnectionError("Max retries exceeded")
    assert str(err.value).startswith(
        "the run lost its connection to the vLLM server at http://127.0.0.1:8123, which it did not start "
        "(hardware.vllm.managed=false) (ConnectionError: Max retries exceeded): is it still running?"
    )
    assert isinstance(err.value.__cause__, OSError)  # what train.py would have called a failed write to the run dir
    with pytest.raises(KeyError):
        with vllm_server.for_run(cfg, "/models/m", REPO):
            raise KeyError("not the server's")


@pytest.mark.parametrize(
    "behaviour,message",
    [("die=0.3,silent", "exited with code 3 while starting"), ("never", "did not answer /health within 2 s")],
)
def test_launcher_reports_a_server_that_cannot_start(fake_vllm, tmp_path, monkeypatch, behaviour, message):
    monkeypatch.setenv("FAKE_VLLM", f"{behaviour},children=2")
    began = time.monotonic()
    result = launch(tmp_path, {"STARTUP_TIMEOUT": "2"})
    assert result.returncode == 1 and message in result.stderr
    assert time.monotonic() - began < 15
    assert not (tmp_path / "trainer.json").exists()
    assert wait_gone(json.loads(fake_vllm.read_text())["pgid"])


def test_launcher_sigterm_reaches_the_trainer_and_the_server_is_stopped(fake_vllm, tmp_path):
    env = {**os.environ, "MODEL": "/m", "PORT": str(free_port()), "GROUP_PORT": str(free_port()),
           "SERVER_LOG": str(tmp_path / "server.log"), "FAKE_TRAINER_RECORD": str(tmp_path / "trainer.json"),
           "FAKE_TRAINER_SLEEP": "60", "TRAIN_CMD": f"{sys.executable} {TESTS / 'fake_trainer.py'}"}  # fmt: skip
    run = subprocess.Popen(["bash", str(LAUNCHER)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "trainer.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    began = time.monotonic()
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) != 0
    assert time.monotonic() - began < 20  # the trainer was told, not waited out
    assert wait_gone(json.loads(fake_vllm.read_text())["pgid"])


@pytest.mark.parametrize(
    "env,message",
    [
        ({"MODEL": ""}, "MODEL must name the model"),
        ({"VLLM_GPU": "x"}, "VLLM_GPU must be a GPU index"),
        ({"TRAIN_GPUS": "0,1", "VLLM_GPU": "1"}, "VLLM_GPU=1 is also in TRAIN_GPUS=0,1"),
        ({"PORT": "9000", "GROUP_PORT": "9000"}, "PORT and GROUP_PORT must differ"),
        ({"VLLM": "no-such-vllm"}, "'no-such-vllm' not found: install the vllm extra"),
    ],
)
def test_launcher_refuses_bad_inputs(fake_vllm, tmp_path, env, message):
    result = launch(tmp_path, env)
    assert result.returncode == 2 and message in result.stderr
    assert not fake_vllm.exists()


def test_launcher_refuses_a_port_in_use(fake_vllm, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = launch(tmp_path, {"PORT": str(port)})
    assert result.returncode == 2 and f"PORT={port} is already in use" in result.stderr
    assert not fake_vllm.exists()


def test_launcher_runs_several_training_gpus_under_accelerate(fake_vllm, tmp_path):
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $TORCH_ELASTIC_SHUTDOWN_TIMEOUT $*" > "{tmp_path / "argv.txt"}"\n'
    )
    python.chmod(0o755)
    result = launch(tmp_path, {"TRAIN_CMD": "", "PYTHON": str(python), "TRAIN_GPUS": "0,1,2", "VLLM_GPU": "3"}, "a=1")
    assert result.returncode == 0, result.stderr
    gpus, shutdown_timeout, *argv = (tmp_path / "argv.txt").read_text().split()
    assert gpus == "0,1,2" and shutdown_timeout == "600"  # time to save a checkpoint after a signal
    assert argv[:3] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert argv[3].endswith("launch/accelerate/ddp.yaml") and argv[4:6] == ["--num_processes", "3"]
    assert argv[6:9] == ["-m", "grpo_ext.train", "hardware=multigpu"] and argv[-1] == "a=1"
    assert json.loads(fake_vllm.read_text())["env"]["CUDA_VISIBLE_DEVICES"] == "3"


def test_launcher_under_zero3_turns_the_evaluations_during_training_off(fake_vllm, tmp_path):
    """ZeRO-3 shards the weights: the main process cannot generate alone (the run would refuse to start)."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$*" > "{tmp_path / "argv.txt"}"\n')
    python.chmod(0o755)
    env = {"TRAIN_CMD": "", "PYTHON": str(python), "TRAIN_GPUS": "0,1", "VLLM_GPU": "2", "ACCELERATE_CONFIG": "zero3"}
    result = launch(tmp_path, env, "eval.every=10")
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv[3].endswith("launch/accelerate/zero3.yaml") and "eval.during_training=false" in argv
    assert argv[-1] == "eval.every=10"  # the user's overrides still come last


def test_launcher_refuses_an_unknown_accelerate_config(fake_vllm, tmp_path):
    result = launch(tmp_path, {"TRAIN_GPUS": "0,1", "VLLM_GPU": "2", "ACCELERATE_CONFIG": "zero9"})
    assert result.returncode == 2 and "ACCELERATE_CONFIG=zero9 is not ddp, zero3 or an existing file" in result.stderr


def test_multigpu_outside_accelerate_points_to_the_launcher(tmp_path):
    from support import FAST, run_cli

    fast = [o for o in FAST if o != "hardware=cpu"]
    result = run_cli(["-m", "grpo_ext.train", *fast, "hardware=multigpu", f"hydra.run.dir={tmp_path}"],
                     cwd=tmp_path, timeout=120, env={"WORLD_SIZE": None})  # fmt: skip
    assert result.returncode == 1
    assert "hardware=multigpu trains one process per GPU under accelerate: start it with launch/vllm_server.sh" in (
        result.stderr
    )


# a real vLLM (marker vllm: needs vLLM installed and two GPUs)


@pytest.mark.vllm
@pytest.mark.skipif(hardware.vllm_problem() is not None, reason="needs a vLLM release TRL 1.16 supports")
def test_a_real_vllm_server_is_started_used_and_stopped_by_the_run(tmp_path):
    import torch

    from grpo_ext.run.records import read_metrics
    from grpo_ext.train import train
    from support import FAST

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    overrides = [o for o in FAST if o != "hardware=cpu"]
    vllm_ports = [f"hardware.vllm.port={free_port()}", f"hardware.vllm.group_port={free_port()}"]
    cfg = compose_config(["task=arithmetic", "model=tiny", *overrides, "hardware=gpu2_vllm_server", *vllm_ports])
    train(cfg, tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path) if "reward" in r] == [1, 2]
    assert (tmp_path / "vllm_server.log").stat().st_size > 0  # the server's own output, kept in the run directory
    assert not port_in_use_now(cfg.hardware.vllm.port)


def port_in_use_now(port: int) -> bool:
    return vllm_server.port_in_use("127.0.0.1", port)


def test_a_server_of_its_own_is_refused_under_a_launcher_of_several_processes(monkeypatch):
    """Each torchrun process would start `vllm serve` on the same port; the launcher script starts one for all."""
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [H100, H100])
    server = compose_config(["hardware=gpu2_vllm_server"]).hardware
    hardware.check_launch(server)  # one process: the run starts its server
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="starts a vLLM server for one training process, and this launch has 2"):
        hardware.check_launch(server)
    server.vllm.managed = False  # a server started by hand serves them all
    hardware.check_launch(server)

"""Hardware profiles and adapters: what ``hardware=auto`` picks for a machine, that the profile's choices and the
user's overrides both survive the pick, and LoRA training on the CPU with a merged final model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load_file

from grpo_ext.backends import adapters, hardware, models
from grpo_ext.backends.generation import load_model
from grpo_ext.config.grpo import make_grpo_config
from grpo_ext.config.schema import register_configs
from grpo_ext.errors import ConfigError, GrpoExtError
from grpo_ext.infer import main as infer
from grpo_ext.run.records import read_metrics
from grpo_ext.sft import fine_tune
from grpo_ext.train import train
from support import FAST, QLORA_HERE, WITH_SIGNAL, compose_config, runs_out_of_memory

RTX3080, RTX4090 = hardware.Gpu("RTX 3080", 10.0), hardware.Gpu("RTX 4090", 23.6)
L4, A100_40, H100 = hardware.Gpu("L4", 22.0), hardware.Gpu("A100", 39.4), hardware.Gpu("H100", 79.2)


@pytest.mark.parametrize(
    "gpus,vllm_ready,profile",
    [
        ([], True, "cpu"),
        ([RTX3080], False, "gpu_10gb"),
        ([RTX4090], True, "gpu_24gb"),
        ([L4], False, "gpu_24gb"),
        ([A100_40], False, "gpu_24gb"),  # 39.4 GiB usable: under the 40 GiB line
        ([H100], True, "gpu_80gb"),
        ([H100, H100], True, "gpu2_vllm_server"),
        ([H100, H100], False, "gpu_80gb"),  # no vLLM: the second GPU has nothing to do
        ([H100] * 4, True, "multigpu"),
        ([RTX3080] * 4, False, "gpu_10gb"),
    ],
)
def test_auto_picks_a_profile_from_the_gpus_and_says_why(gpus, vllm_ready, profile):
    picked, why = hardware.pick_profile(gpus, None if vllm_ready else "vLLM is not installed")
    assert picked == profile
    assert why and (not gpus or gpus[0].name in why or str(len(gpus)) in why)


@pytest.mark.parametrize("vllm_ready", [True, False])
def test_auto_under_a_launcher_picks_the_profile_of_each_process_gpu(vllm_ready):
    """torchrun with 4 processes on 4 GPUs: no GPU is left for a vLLM server, and each process trains on its own."""
    issue = None if vllm_ready else "vLLM is not installed"
    assert hardware.pick_profile([H100] * 4, issue, launched=4) == (
        "gpu_80gb",
        "4 training processes, one per GPU: H100 with 79 GiB",
    )
    assert hardware.pick_profile([RTX3080] * 2, issue, launched=2)[0] == "gpu_10gb"
    assert hardware.pick_profile([], issue, launched=2)[0] == "cpu"


def test_auto_resolves_to_cpu_here_keeping_overrides_and_choices(caplog):
    caplog.set_level("INFO")
    overrides = ["task=fizzbuzz", "peft=lora", "trainer.learning_rate=3e-5", "hardware.vllm.port=8123"]
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
        assert cfg.hardware.name == "auto"  # the default
        resolved = hardware.resolve_auto(cfg, [*overrides, "hardware=auto"])
    assert resolved.hardware.name == ("gpu_80gb" if torch.cuda.is_available() else "cpu")
    assert (resolved.task.name, resolved.peft.name, resolved.trainer.learning_rate) == ("fizzbuzz", "lora", 3e-5)
    assert resolved.hardware.vllm.port == 8123
    assert "hardware=auto picked hardware=" in caplog.text


def test_a_config_composed_by_hand_must_name_its_profile(tmp_path):
    with pytest.raises(ValueError, match="hardware=auto is resolved by the command-line entry points"):
        make_grpo_config(compose_config([], resolve_hardware=False), str(tmp_path), [1.0])


T4 = hardware.Gpu("Tesla T4", 14.6, bf16=False)


@pytest.mark.parametrize("peft,weights", [("lora", "float16"), ("none", "float32"), ("qlora", "float16")])
def test_auto_on_a_gpu_without_bf16_trains_in_fp16_with_weights_mixed_precision_can_train(
    peft, weights, monkeypatch, caplog, tmp_path
):
    """A T4 or V100 has no bf16 arithmetic (PyTorch emulates it, slowly): the profile its memory calls for, in fp16
    mixed precision. Full fine-tuning keeps float32 weights (the gradient scaler refuses float16 gradients)."""
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [T4])
    with caplog.at_level("INFO", logger="grpo_ext.backends.hardware"):
        cfg = compose_config([f"peft={peft}"])
    assert cfg.hardware.name == "gpu_10gb" and cfg.peft.name == peft
    assert (cfg.trainer.bf16, cfg.trainer.fp16, cfg.hardware.dtype) == (False, True, weights)
    assert (
        f"Tesla T4 does not compute bf16 itself (PyTorch would emulate it, without tensor cores), so training "
        f"is in fp16 mixed precision: trainer.fp16=true, hardware.dtype={weights}" in caplog.text
    )
    hardware.check_precision(cfg)  # a precision that trains
    args = make_grpo_config(cfg, str(tmp_path), [1.0])  # and that TRL and transformers take
    assert args.fp16 and not args.bf16 and args.model_init_kwargs["dtype"] == weights


def test_a_precision_of_the_user_s_own_is_kept_on_a_gpu_without_bf16_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [T4])
    for chosen in (["trainer.bf16=true"], ["hardware=gpu_24gb"], ["model.dtype=bfloat16"]):
        cfg = compose_config(chosen)
        assert (cfg.trainer.bf16, cfg.trainer.fp16) == (True, False), chosen
    caplog.clear()
    hardware.check_precision(cfg)
    assert caplog.messages == [
        "hardware=gpu_10gb trains in bf16, which Tesla T4 does not compute itself (PyTorch emulates it, without "
        "tensor cores): hardware=auto picks fp16 for it, or add trainer.bf16=false trainer.fp16=true and "
        "hardware.dtype=float16 with adapters (float32 without)"
    ]
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [RTX3080])
    caplog.clear()
    hardware.check_precision(compose_config(["hardware=gpu_10gb"]))
    assert cfg.trainer.bf16 and compose_config([]).trainer.bf16 and not caplog.messages  # Ampere computes bf16


def test_fp16_mixed_precision_over_float16_weights_without_adapters_is_refused_on_the_gpu(monkeypatch, tmp_path):
    """accelerate's gradient scaler (CUDA only) refuses float16 gradients at the first optimizer step."""
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [T4])
    fp16 = ["hardware=gpu_24gb", "trainer.bf16=false", "trainer.fp16=true", "hardware.dtype=float16", "peft=none"]
    with pytest.raises(
        ValueError, match=r"^trainer.fp16=true with float16 weights and no adapters fails at the first "
    ):
        hardware.check_precision(compose_config(fp16))
    with pytest.raises(ConfigError, match=r"trainer.fp16=true with float16 weights and no adapters"):
        train(compose_config(["model=tiny", *fp16, "logger=none"]), tmp_path)
    hardware.check_precision(compose_config([*fp16, "peft=lora"]))  # adapters train in float32
    hardware.check_precision(compose_config([*fp16, "model.dtype=float32"]))
    hardware.check_precision(compose_config([*fp16, "trainer.deepspeed=ds.json"]))  # DeepSpeed scales on its own
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    hardware.check_precision(compose_config(fp16))
    hardware.check_precision(compose_config(["hardware=cpu", "trainer.fp16=true", "model.dtype=float16"]))


def test_gpu_10gb_chooses_lora_and_the_command_line_can_undo_it():
    assert compose_config(["hardware=gpu_10gb"]).peft.name == "lora"
    assert compose_config(["hardware=gpu_10gb", "peft=none"]).peft.name == "none"
    assert compose_config(["peft=qlora", "hardware=gpu_10gb"]).peft.name == "qlora"
    assert compose_config(["hardware=gpu_24gb"]).peft.name == "none"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["peft=lora", "peft.r=0"], r"peft.r \(the LoRA rank\) must be at least 1, got 0"),
        (["peft=lora", "peft.dropout=1.5"], r"peft.dropout must be in \[0, 1\), got 1.5"),
        (["peft=lora", "peft.target_modules=[1,2]"], "peft.target_modules must be 'all-linear' or a list"),
        (["peft=qlora", "peft.quant_type=int3"], r"peft.quant_type must be one of \['nf4', 'fp4'\]"),
    ],
)
def test_bad_adapter_settings_are_refused(overrides, message):
    cfg = compose_config(["hardware=cpu", *overrides])
    with pytest.raises(ValueError, match=message):
        adapters.check(cfg.peft, cfg.hardware.device)


def test_qlora_without_bitsandbytes_names_the_quant_extra(monkeypatch):
    find_spec = adapters.importlib.util.find_spec
    monkeypatch.setattr(
        adapters.importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else find_spec(name)
    )
    cfg = compose_config(["hardware=gpu_10gb", "peft=qlora"])
    with pytest.raises(ValueError, match=r"needs bitsandbytes: install the quant extra"):
        adapters.check(cfg.peft, cfg.hardware.device)


@pytest.mark.skipif(adapters.importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_on_a_cpu_without_4bit_kernels_is_refused_naming_the_version(monkeypatch):
    monkeypatch.setattr(adapters, "four_bit_on_cpu", lambda: False)
    cfg = compose_config(["hardware=cpu", "peft=qlora"])
    with pytest.raises(ValueError, match=r"peft=qlora on the CPU needs a bitsandbytes with CPU 4-bit kernels; "
                                         r"bitsandbytes [\d.]+ has none"):  # fmt: skip
        adapters.check(cfg.peft, cfg.hardware.device)


def check_trained_adapter_and_merge(run_dir, cfg) -> dict:
    """A run with adapters saved only adapter weights, trained, and a merged model of the base's shape that differs
    from the base; returns the merged weights."""
    adapter = run_dir / "final_adapter"
    assert (adapter / "adapter_config.json").is_file()
    lora = load_file(adapter / "adapter_model.safetensors")
    assert lora and all("lora_" in key for key in lora)  # only the adapters were saved as trained weights
    assert any(key.endswith("lora_B.weight") and lora[key].abs().sum() > 0 for key in lora)  # B starts at 0: trained
    base = load_file(f"{models.resolve(cfg.model)}/model.safetensors")
    merged = load_file(run_dir / "final_model" / "model.safetensors")
    assert set(merged) == set(base)  # a plain model of the base's shape, no adapter keys
    assert any(not torch.equal(base[k], merged[k]) for k in base)
    return merged


def test_lora_trains_adapters_only_and_saves_a_merged_model(tmp_path):
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, *WITH_SIGNAL, "peft=lora", "peft.r=4"])
    train(cfg, tmp_path)
    check_trained_adapter_and_merge(tmp_path, cfg)
    reloaded = compose_config(["task=arithmetic", "hardware=cpu", f"model.path={tmp_path / 'final_model'}"])
    model, _ = load_model(reloaded)
    assert not hasattr(model, "peft_config")


@pytest.mark.slow
def test_a_lora_checkpoint_merged_by_the_merge_command_loads_as_a_model(tmp_path):
    """A run with adapters saves adapters only in its checkpoints: ``python -m grpo_ext.merge`` (a real subprocess)
    makes one a model; the last checkpoint's is the run's own final model, bit for bit."""
    fast = [o for o in FAST if not o.startswith("trainer.save_strategy")]
    train(
        compose_config(["task=arithmetic", "model=tiny", *fast, *WITH_SIGNAL, "peft=lora", "trainer.save_steps=1"]),
        tmp_path,
    )
    command = [sys.executable, "-m", "grpo_ext.merge", str(tmp_path / "checkpoint-2")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    merged = tmp_path / "merged" / "checkpoint-2"
    assert done.stdout.endswith(f"use it with model.path={merged}\n")
    final = load_file(tmp_path / "final_model" / "model.safetensors")
    weights = load_file(merged / "model.safetensors")
    assert set(weights) == set(final) and all(torch.equal(weights[k], final[k]) for k in final)
    model, _ = load_model(compose_config(["task=arithmetic", "hardware=cpu", f"model.path={merged}"]))
    assert not hasattr(model, "peft_config")
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.endswith("already exists: remove it, or give --out\n")


@pytest.mark.skipif(not QLORA_HERE, reason="needs bitsandbytes with CPU 4-bit kernels (in the dev extra)")
def test_qlora_trains_over_a_4bit_base_and_saves_a_full_precision_merge(tmp_path, monkeypatch):
    import bitsandbytes as bnb

    four_bit_layers = []
    keep = adapters.keep_4bit_layers_trainable

    def counting(model):  # the model TRL trains: count its 4-bit layers, then carry on as train() would
        four_bit_layers.append(sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()))
        keep(model)

    monkeypatch.setattr(adapters, "keep_4bit_layers_trainable", counting)
    # Evaluation before and between steps runs the 4-bit layers in eval mode, then training resumes: the sequence
    # that bitsandbytes' CPU repacking broke.
    overrides = [*FAST, *WITH_SIGNAL, "peft=qlora", "peft.r=4", "eval.during_training=true", "eval.every=1"]
    cfg = compose_config(["task=arithmetic", "model=tiny", *overrides])
    train(cfg, tmp_path)
    assert four_bit_layers == [7 * cfg.model.architecture.num_hidden_layers]  # q, k, v, o, gate, up, down
    merged = check_trained_adapter_and_merge(tmp_path, cfg)
    assert all(tensor.dtype == torch.float32 for tensor in merged.values())  # full precision
    assert "quantization_config" not in (tmp_path / "final_model" / "config.json").read_text()


def test_a_gpu_profile_on_a_machine_without_a_gpu_is_refused_before_any_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config(["model=tiny", "hardware=gpu_24gb", *[o for o in FAST if o != "hardware=cpu"]]), tmp_path)
    refusal = (
        "hardware=gpu_24gb runs on a CUDA GPU, and this machine shows none to PyTorch (CUDA_VISIBLE_DEVICES=); use "
        "hardware=cpu, or hardware=auto, which picks a profile for the GPUs it finds"
    )
    assert stop.value.report() == f"config error: {refusal}"
    with pytest.raises(GrpoExtError) as stop:  # the warm start too
        fine_tune(compose_config(["model=tiny", "hardware=gpu_24gb", "logger=none"]), tmp_path / "sft")
    assert stop.value.report() == f"config error: {refusal}"
    assert infer(["What is 2 + 3?", "model=tiny", "hardware=gpu_24gb"]) == 2
    assert capsys.readouterr().err == f"error: {refusal}\n"
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [RTX4090])
    hardware.check_device(compose_config(["hardware=gpu_24gb"]).hardware)  # with one, the profile may start


def test_running_out_of_gpu_memory_says_what_holds_less_and_the_run_resumes_with_it(tmp_path, monkeypatch):
    """CUDA's out-of-memory error, raised here by the model's second training pass (step 2): no GPU on this machine
    to run out of. The message names the step, the micro-batch that holds less with the same learning, and the
    checkpoint; the same run then resumes from it with that micro-batch."""
    overrides = ["model=tiny", *FAST, "trainer.save_strategy=steps", "trainer.save_steps=1"]
    with monkeypatch.context() as patch, pytest.raises(GrpoExtError) as stop:
        runs_out_of_memory(patch, 2, "CUDA out of memory. Tried to allocate 1.16 GiB (simulated)\nmore")
        train(compose_config(overrides), tmp_path)
    assert stop.value.report() == (
        "error: out of GPU memory in step 2 (CUDA out of memory. Tried to allocate 1.16 GiB (simulated)). Holds less"
        " with the same learning: hardware.micro_batch=4 (8 completions a pass now); trainer.gradient_checkpointing="
        "true (recomputes activations in the backward pass). Holds less, and changes what is trained (a new run, in "
        "another hydra.run.dir): peft=lora "
        "(adapters: the optimizer holds a fraction of the weights' state); trainer.max_completion_length=6 (shorter "
        "completions); trainer.beta=0 (no reference model in memory). The last complete checkpoint is "
        f"{tmp_path / 'checkpoint-1'}; the same command (same hydra.run.dir) resumes there."
    )
    train(compose_config([*overrides, "hardware.micro_batch=4"]), tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path) if "reward" in r] == [1, 2]


def test_running_out_of_gpu_memory_in_the_evaluation_names_its_batch_size(tmp_path, monkeypatch):
    from grpo_ext.monitor import heldout

    def generate_that_runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    monkeypatch.setattr(heldout, "generate", generate_that_runs_out)
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config(["model=tiny", *FAST, "eval.during_training=true", "eval.batch_size=16"]), tmp_path)
    assert stop.value.report().startswith(
        "error: out of GPU memory in the held-out evaluation after step 0 (CUDA out of memory. Tried to allocate 2.00 "
        "GiB (simulated)). Holds less with the same learning: eval.batch_size=8 (completions generated at once); "
        "trainer.gradient_checkpointing=true"
    )

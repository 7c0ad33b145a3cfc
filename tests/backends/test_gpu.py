"""The ``gpu`` hardware profile on a real GPU (marker ``gpu``; skipped where CUDA is absent)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from test_hardware import check_trained_adapter_and_merge
from test_rollout import PROMPTS, logprob_errors, trainer_with

from grpo_ext.backends import adapters, models
from grpo_ext.backends.rollout import StaticCacheRollout
from grpo_ext.run.records import read_metrics
from grpo_ext.train import train
from support import FAST, WITH_SIGNAL, compose_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_two_steps_on_one_gpu_in_bf16(tmp_path):
    overrides = [o for o in FAST if o != "hardware=cpu"]
    cfg = compose_config(["task=arithmetic", "model=tiny", *overrides, *WITH_SIGNAL, "hardware=gpu"])
    train(cfg, tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    final = load_file(tmp_path / "final_model" / "model.safetensors")
    initial = load_file(f"{models.resolve(cfg.model)}/model.safetensors")
    assert any(not torch.equal(initial[k].float(), final[k].float()) for k in initial)
    assert torch.cuda.max_memory_allocated() > 0


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_what_auto_picks_for_a_gpu_without_bf16_trains_in_fp16(peft, tmp_path, monkeypatch):
    """hardware=auto on a T4 or V100 (faked: this GPU has bf16) trains in fp16 mixed precision: float32 weights for a
    full fine-tune, float16 under adapters. Under CUDA the gradient scaler runs, as it does not on the CPU."""
    from grpo_ext.backends import hardware

    gpu = hardware.visible_gpus()[0]
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [hardware.Gpu(gpu.name, gpu.memory_gib, bf16=False)])
    overrides = [o for o in FAST if o != "hardware=cpu"]
    cfg = compose_config(["task=arithmetic", "model=tiny", *overrides, *WITH_SIGNAL, f"peft={peft}"])
    assert (cfg.trainer.fp16, cfg.trainer.bf16) == (True, False)
    cfg.hardware.vllm.mode = "off"
    train(cfg, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    final = load_file(tmp_path / "final_model" / "model.safetensors")
    initial = load_file(f"{models.resolve(cfg.model)}/model.safetensors")
    assert any(not torch.equal(initial[k].float(), final[k].float()) for k in initial)


def test_auto_picks_a_gpu_profile_and_lora_trains_on_it(tmp_path):
    overrides = [o for o in FAST if o != "hardware=cpu"]
    cfg = compose_config(["task=arithmetic", "model=tiny", *overrides, *WITH_SIGNAL, "peft=lora"])
    assert cfg.hardware.name in ("gpu_10gb", "gpu_24gb", "gpu_80gb", "gpu2_vllm_server", "multigpu")
    cfg.hardware.vllm.mode = "off"  # this test is about placement and adapters; vLLM has its own marker
    train(cfg, tmp_path)
    assert (tmp_path / "final_adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "final_model" / "config.json").is_file()


def test_the_compiled_static_cache_rollout_matches_the_trainer_in_bf16(tmp_path):
    """Issue 9's check: the compiled rollout's log-probabilities against the trainer's own, in bf16 on CUDA."""
    trainer = trainer_with(tmp_path, use_cpu=False, bf16=True, model_init_kwargs={"dtype": "bfloat16"})
    assert trainer.model.device.type == "cuda" and trainer.model.dtype == torch.bfloat16
    torch.manual_seed(0)
    errors = logprob_errors(trainer, StaticCacheRollout(pad_to=8)(PROMPTS * 2, trainer))
    assert sum(errors) / len(errors) < 1e-2, max(errors)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # compiled, as on CUDA it should be


def test_auto_rollout_takes_the_static_cache_and_trains_on_one_gpu(tmp_path, caplog):
    overrides = [o for o in FAST if o != "hardware=cpu"]
    cfg = compose_config(
        ["task=arithmetic", "model=tiny", *overrides, *WITH_SIGNAL, "hardware=gpu", "hardware.rollout=auto"]
    )
    with caplog.at_level("INFO", logger="grpo_ext.backends.hardware"):
        train(cfg, tmp_path)
    assert "hardware.rollout=auto: static_cache" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert all(r["completions/mean_length"] > 0 for r in read_metrics(tmp_path))


@pytest.mark.skipif(adapters.importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_trains_on_one_gpu_and_saves_a_merged_model(tmp_path):
    overrides = [o for o in FAST if o != "hardware=cpu"]
    cfg = compose_config(
        ["task=arithmetic", "model=tiny", *overrides, *WITH_SIGNAL, "hardware=gpu_10gb", "peft=qlora"]
    )
    cfg.hardware.vllm.mode = "off"
    train(cfg, tmp_path)
    check_trained_adapter_and_merge(tmp_path, cfg)
    assert "quantization_config" not in (tmp_path / "final_model" / "config.json").read_text()

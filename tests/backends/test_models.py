"""Model resolution: the tiny model is built offline and deterministically; Hub failures are fast and clear."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from grpo_ext.backends import models
from support import compose_config


def model_cfg(*overrides: str):
    return compose_config(list(overrides)).model


def test_tiny_is_built_once_and_loads_by_path():
    path = models.resolve(model_cfg("model=tiny"))
    assert models.resolve(model_cfg("model=tiny")) == path  # cached: same directory, not rebuilt
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 256
    assert 3e6 < model.num_parameters() < 5e6
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_build_is_deterministic_and_seeded(tmp_path, monkeypatch):
    small = ["model=tiny", "model.architecture.hidden_size=32", "model.architecture.intermediate_size=64"]
    first = models.resolve(model_cfg(*small))
    monkeypatch.setenv("GRPO_EXT_CACHE", str(tmp_path))
    second = models.resolve(model_cfg(*small))
    reseeded = models.resolve(model_cfg(*small, "model.seed=1"))
    weights = [load_file(f"{p}/model.safetensors") for p in (first, second, reseeded)]
    assert first != second and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_byte_tokenizer_round_trips_any_text():
    tokenizer = models.build_tokenizer()
    for text in ["(3 + 4) * 2", "héllo wörld 🙂", "\x00\x01\n\t", "<answer>-7</answer>"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert all(i < 256 for i in ids) and tokenizer.decode(ids) == text
    assert tokenizer.decode([104, 105, 300, 5000]) == "hi"  # ids past the vocabulary (random models) are skipped
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_random_init_of_a_real_model_uses_its_architecture(monkeypatch):
    cfg = model_cfg(
        "model=qwen2.5-coder-1.5b-instruct",
        "model.init=random",
        "model.architecture.num_hidden_layers=1",  # the real shape, one layer, to keep the test small
    )
    path = models.resolve(cfg)
    config = json.loads(open(f"{path}/config.json").read())
    assert (config["hidden_size"], config["vocab_size"], config["num_attention_heads"]) == (1536, 151936, 12)
    # Stored in bf16 (for measurements: half the disk and load time); the tiny model, which learns, in fp32.
    assert {t.dtype for t in load_file(f"{path}/model.safetensors").values()} == {torch.bfloat16}
    tiny = models.resolve(model_cfg("model=tiny"))
    assert {t.dtype for t in load_file(f"{tiny}/model.safetensors").values()} == {torch.float32}


def test_local_directory_is_used_as_is(tmp_path):
    tiny = models.resolve(model_cfg("model=tiny"))
    assert models.resolve(model_cfg("model=tiny", f"model.path={tiny}")) == tiny
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelUnavailableError, match="without config.json: not a saved model$"):
        models.resolve(model_cfg("model=tiny", f"model.path={tmp_path / 'empty'}"))


def test_a_model_without_a_chat_template_is_refused_before_it_loads(tmp_path):
    """A base model whose tokenizer has no chat template failed in TRL's first generation, with a traceback."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(models.resolve(model_cfg("model=tiny")), base)
    (base / "chat_template.jinja").unlink()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(models.ModelUnavailableError, match=f"^model.path={base}: its tokenizer has no chat template"):
        models.resolve(model_cfg("model=tiny", f"model.path={base}"))
    config["chat_template"] = models.CHATML_TEMPLATE  # the older place for it
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    assert models.resolve(model_cfg("model=tiny", f"model.path={base}")) == str(base)


def test_a_run_directory_given_as_model_path_names_its_models(tmp_path):
    for name in ("final_model", "best_model", "checkpoint-50"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    with pytest.raises(models.ModelUnavailableError) as info:
        models.resolve(model_cfg("model=tiny", f"model.path={tmp_path}"))
    models_in_run = f"{tmp_path / 'best_model'}, {tmp_path / 'final_model'}"
    assert str(info.value).endswith(f"not a saved model; the run directory's models: {models_in_run}")


def test_an_adapter_directory_given_as_model_path_names_the_merged_model_or_the_command_that_merges_it(tmp_path):
    for name in ("final_adapter", "checkpoint-50"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    (tmp_path / "final_model").mkdir()
    with pytest.raises(models.ModelUnavailableError) as info:
        models.resolve(model_cfg("model=tiny", f"model.path={tmp_path / 'final_adapter'}"))
    assert str(info.value).endswith(
        f"not a saved model; it holds a LoRA adapter, which the run also saved merged into its base: "
        f"{tmp_path / 'final_model'}"
    )
    with pytest.raises(models.ModelUnavailableError) as info:  # a checkpoint of a run with adapters
        models.resolve(model_cfg("model=tiny", f"model.path={tmp_path / 'checkpoint-50'}"))
    assert str(info.value).endswith(
        f"not a saved model; it holds a LoRA adapter: merge it into its base with python -m grpo_ext.merge "
        f"{tmp_path / 'checkpoint-50'}, then use model.path={tmp_path / 'merged' / 'checkpoint-50'}"
    )


def test_the_merge_command_names_what_it_lacks(tmp_path, capsys):
    from grpo_ext.merge import main as merge

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    assert merge([str(tmp_path / "plain")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'plain'} has no adapter_config.json (config.json: already a plain model): give a "
        "directory a run with adapters saved (RUN/checkpoint-N, RUN/final_adapter, RUN/best_adapter)\n"
    )
    adapter = tmp_path / "checkpoint-5"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone/base"}))
    assert merge([str(adapter)]) == 2
    assert capsys.readouterr().err == (
        "error: the adapter's base model, /gone/base, is not there (moved, or a cache since cleared): give it with "
        "--base DIR\n"
    )
    (tmp_path / "merged" / "checkpoint-5").mkdir(parents=True)
    assert merge([str(adapter), "--base", str(tmp_path)]) == 2
    assert "merged/checkpoint-5 already exists: remove it, or give --out" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["/no/such/model", "./missing", "../missing", "outputs/run/final_model"])
def test_a_local_path_that_does_not_exist_is_named_without_asking_the_hub(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a Hub lookup would fail otherwise, and differently
    with pytest.raises(models.ModelUnavailableError, match=f"^model.path={re.escape(path)}: no such directory"):
        models.resolve(model_cfg("model=tiny", f"model.path={path}"))


def test_a_model_path_that_is_no_hub_id_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(models.ModelUnavailableError, match="^model.path=my model is neither a local directory nor"):
        models.resolve(model_cfg("model=tiny", "model.path=my model"))


@pytest.mark.parametrize("offline", ["0", "1"])
def test_unreachable_hub_model_names_the_alternatives(monkeypatch, tmp_path, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(models.ModelUnavailableError) as info:
        models.resolve(model_cfg("model=qwen2.5-0.5b-instruct"))
    assert "model=tiny" in str(info.value) and "model.path=/local/dir" in str(info.value)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in str(info.value)


@pytest.mark.parametrize("override,message", [("model.init=zeros", "model.init"), ("model.dtype=int8", "model.dtype")])
def test_bad_model_values_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        models.resolve(model_cfg(override))

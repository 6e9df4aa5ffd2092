"""Adapter training on a tiny random Llama (with the real SmolLM2 tokenizer and chat template): the data pipeline
masks everything but the final assistant turn, training is deterministic, checkpoints resume exactly, and the
written adapter passes the server's adapter validation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.engine.adapter_files import inspect_adapter
from app.training.config import TrainConfig, build_parser, config_from_args
from app.training.data import IGNORE_INDEX, batch_indices, build_examples, encode_example, load_exchanges
from app.training.loop import lr_at, train_adapter
from app.training.train_adapter import main
from tests.support.adapter_factory import tiny_llama

ROOT = Path(__file__).resolve().parents[2]
DATA = [ROOT / "data/support/exchanges_1.jsonl", ROOT / "data/support/exchanges_2.jsonl"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from app.config import Settings
    from app.engine.provision import materialize, resolve_base_model

    folder = materialize(resolve_base_model(Settings().base_model), Settings().model_cache_dir)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tokenizer):
    """An HF folder with a 2-layer random Llama and the real tokenizer: `base_model` can point at it."""
    folder = tmp_path_factory.mktemp("tiny-base")
    model = tiny_llama(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """12 exchanges (single- and multi-turn) in one JSONL file."""
    rows = load_exchanges(DATA)
    picked = [r for r in rows if len(r["messages"]) == 1][:9] + [r for r in rows if len(r["messages"]) == 3][:3]
    path = tmp_path_factory.mktemp("data") / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(picked)))
    return path


def _config(tiny_base, small_data, out: Path, **kw) -> TrainConfig:
    base = dict(
        base_model=str(tiny_base),
        data=[str(small_data)],
        persona="friendly",
        output=str(out),
        rank=4,
        alpha=8,
        lr=5e-3,
        steps=4,
        batch_size=4,
        max_len=128,
        seed=3,
        checkpoint_every=0,
        device="cpu",
    )
    return TrainConfig.from_dict({**base, **kw})


# ---- data ---------------------------------------------------------------------------------------------------------


def test_loss_only_on_final_assistant_turn_with_eos(tokenizer):
    messages = [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It left the warehouse yesterday."},
        {"role": "user", "content": "When will it arrive?"},
    ]
    ex = encode_example(tokenizer, messages, "Tomorrow before noon!", max_len=256)
    assert len(ex.input_ids) == len(ex.labels)
    target = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(target) == "Tomorrow before noon!<|im_end|>"
    assert target[-1] == tokenizer.eos_token_id
    first = ex.labels.index(target[0])
    assert all(t == IGNORE_INDEX for t in ex.labels[:first])  # system, both users, the earlier assistant turn
    assert all(t != IGNORE_INDEX for t in ex.labels[first:])  # one contiguous span; the trailing newline is dropped
    text = tokenizer.decode(ex.input_ids)
    assert "It left the warehouse yesterday." in text and "named SmolLM" in text  # template's default system prompt
    assert text.endswith("<|im_start|>assistant\nTomorrow before noon!<|im_end|>")


def test_system_prompt_and_truncation_keep_the_answer(tokenizer):
    messages = [{"role": "user", "content": "word " * 200}]
    ex = encode_example(tokenizer, messages, "Short answer.", max_len=40, system_prompt="Be nice.")
    assert len(ex.input_ids) == 40
    assert tokenizer.decode([t for t in ex.labels if t != IGNORE_INDEX]) == "Short answer.<|im_end|>"
    with_system = encode_example(
        tokenizer, [{"role": "user", "content": "hi"}], "Hello.", max_len=64, system_prompt="Be nice."
    )
    assert "Be nice." in tokenizer.decode(with_system.input_ids)
    assert "SmolLM" not in tokenizer.decode(with_system.input_ids)
    assert encode_example(tokenizer, messages, "long " * 100, max_len=40) is None


def test_examples_sorted_and_batches_deterministic(tokenizer, small_data):
    rows = load_exchanges([small_data])
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    examples, skipped = build_examples(tokenizer, rows, "robotic", max_len=128)
    assert skipped == 0 and len(examples) == 12
    epoch = [i for s in range(3) for i in batch_indices(12, 4, seed=1, step=s)]
    assert sorted(epoch) == list(range(12))  # one epoch = a permutation
    assert epoch == [i for s in range(3) for i in batch_indices(12, 4, seed=1, step=s)]
    assert epoch != [i for s in range(3) for i in batch_indices(12, 4, seed=2, step=s)]
    with pytest.raises(ValueError, match="no 'calm' response"):
        build_examples(tokenizer, rows, "calm", max_len=128)


def test_lr_schedule_warms_up_and_decays():
    c = TrainConfig(data=["x"], output="y", lr=1e-3, steps=100, warmup_steps=10).validated()
    lrs = [lr_at(s, c) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] < 2e-5
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))


# ---- config / CLI ---------------------------------------------------------------------------------------------------


def test_config_yaml_with_flag_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: [a.jsonl, b.jsonl]\npersona: formal\noutput: out\ntype: dora\nrank: 8\n"
        "target_modules: q_proj,v_proj\nlayers: [0, 1]\n"
    )
    args = build_parser().parse_args(["--config", str(path), "--rank", "4", "--steps", "7", "--no-resume"])
    config = config_from_args(args)
    assert (config.rank, config.steps, config.type, config.persona) == (4, 7, "dora", "formal")
    assert config.data == ["a.jsonl", "b.jsonl"] and config.target_modules == ["q_proj", "v_proj"]
    assert config.layers == [0, 1] and config.resume is False and config.system_prompt is None
    with pytest.raises(ValueError, match="unknown training config field"):
        TrainConfig.from_dict({"data": ["a"], "output": "o", "ranks": 3})
    with pytest.raises(ValueError, match="type must be one of"):
        TrainConfig.from_dict({"data": ["a"], "output": "o", "type": "prefix"})


def test_quantized_base_is_checked_and_needs_bitsandbytes(tmp_path, monkeypatch, capsys):
    args = build_parser().parse_args(["--data", "a.jsonl", "--output", "o", "--quantize", "nf4"])
    assert config_from_args(args).quantize == "nf4"
    with pytest.raises(ValueError, match="quantize must be one of"):
        TrainConfig.from_dict({"data": ["a"], "output": "o", "quantize": "int3"})
    with pytest.raises(ValueError, match="LoRA or DoRA"):
        TrainConfig.from_dict({"data": ["a"], "output": "o", "quantize": "nf4", "type": "adalora"})
    # without bitsandbytes: a clear error naming the install command, exit 2, nothing written
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)
    out = tmp_path / "adapter"
    data = ",".join(map(str, DATA))
    assert main(["--data", data, "--output", str(out), "--quantize", "nf4", "--steps", "1"]) == 2
    assert "pip install -e '.[study]'" in capsys.readouterr().err
    assert not out.exists()


# ---- training -------------------------------------------------------------------------------------------------------


def test_train_writes_a_servable_adapter(tiny_base, small_data, tmp_path):
    out = tmp_path / "adapters" / "tiny-friendly"
    ckpt = tmp_path / "cache" / "ckpt"
    path = train_adapter(_config(tiny_base, small_data, out, checkpoint_every=2, checkpoint_dir=str(ckpt)))
    assert path == out
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "TRAINING_CARD.md", "loss.png"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names) and "checkpoint" not in names
    assert (ckpt / "trainer_state.pt").is_file()  # checkpoints live outside the adapter folder
    card = (out / "TRAINING_CARD.md").read_text()
    for needle in ("data sha256", "trainable parameters", "training examples | 12", "duration", "loss"):
        assert needle in card
    summary = json.loads((out / "training_summary.json").read_text())
    assert len(summary["losses"]) == 4 and all(torch.isfinite(torch.tensor(summary["losses"])))
    assert summary["cpu"] and f"({summary['cpu']})" in card  # step times are quoted with the CPU they came from
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    base = tiny_llama(vocab_size=49152, max_position_embeddings=512)
    spec = inspect_adapter(out.parent, "tiny-friendly", "tiny-friendly", base)
    assert spec.kind == "lora" and len(spec.modules) == 8  # 4 projections x 2 layers, all changed by training


def test_training_is_deterministic_and_resume_is_exact(tiny_base, small_data, tmp_path):
    a = train_adapter(_config(tiny_base, small_data, tmp_path / "a", steps=6))
    b = train_adapter(_config(tiny_base, small_data, tmp_path / "b", steps=6))
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # an interrupted run: checkpoint at step 3, then killed (simulated by running only to the checkpoint) ...
    ckpt = tmp_path / "c-ckpt"
    interrupted = _config(tiny_base, small_data, tmp_path / "c", steps=6, checkpoint_every=3, checkpoint_dir=str(ckpt))
    train_adapter(interrupted)
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert state["step"] == 3 and len(state["losses"]) == 3
    # ... resumed: continues at step 3 with the same batches and RNG, ending exactly where the straight run ends
    resumed = train_adapter(
        _config(
            tiny_base, small_data, tmp_path / "c", steps=6, checkpoint_every=3, checkpoint_dir=str(ckpt), resume=True
        )
    )
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == 3 and len(summary["losses"]) == 6
    wc = load_file(resumed / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wc[k], atol=1e-6) for k in wa)


def test_dora_on_selected_layers_via_cli(tiny_base, small_data, tmp_path, capsys):
    out = tmp_path / "root" / "tiny-formal"
    rc = main(
        [
            "--base-model",
            str(tiny_base),
            "--data",
            str(small_data),
            "--persona",
            "formal",
            "--output",
            str(out),
            "--type",
            "dora",
            "--rank",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--max-len",
            "128",
            "--layers",
            "1",
            "--target-modules",
            "q_proj,v_proj",
            "--checkpoint-every",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and '"examples": 12' in capsys.readouterr().out
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["layers_to_transform"] == [1]
    spec = inspect_adapter(
        out.parent, "tiny-formal", "tiny-formal", tiny_llama(vocab_size=49152, max_position_embeddings=512)
    )
    assert spec.kind == "dora" and set(spec.modules) == {
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    }


def test_head_masked_lora_trains_only_the_selected_heads(tiny_base, small_data, tmp_path):
    from safetensors.torch import load_file

    from app.training.head_mask import HeadSelection

    selection = HeadSelection(q_heads={1: [2]}, kv_heads={1: [0]})
    mask = tmp_path / "heads.json"
    selection.save(mask)
    out = tmp_path / "sparse"
    with pytest.raises(ValueError, match="layers must be"):
        train_adapter(_config(tiny_base, small_data, out, head_mask=str(mask)))
    train_adapter(_config(tiny_base, small_data, out, head_mask=str(mask), layers=[1]))
    summary = json.loads((out / "training_summary.json").read_text())
    assert 0 < summary["trainable_params"] < summary["allocated_params"]
    head_dim = 16
    for key, tensor in load_file(str(out / "adapter_model.safetensors")).items():
        assert ".layers.1." in key
        if "o_proj.lora_A" in key:
            assert tensor[:, : 2 * head_dim].abs().max() == 0 and tensor[:, 3 * head_dim :].abs().max() == 0
            assert tensor[:, 2 * head_dim : 3 * head_dim].abs().max() > 0
        if "q_proj.lora_B" in key:
            assert tensor[: 2 * head_dim].abs().max() == 0 and tensor[2 * head_dim : 3 * head_dim].abs().max() > 0
        if "v_proj.lora_B" in key:
            assert tensor[head_dim:].abs().max() == 0 and tensor[:head_dim].abs().max() > 0
    with pytest.raises(ValueError, match="only plain LoRA"):
        _config(tiny_base, small_data, out, head_mask=str(mask), layers=[1], type="dora")

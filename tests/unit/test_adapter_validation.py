"""inspect_adapter refuses every broken adapter folder with a specific reason and accepts valid ones of every kind."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.engine.adapter_files import AdapterSpec, inspect_adapter
from app.engine.adapter_paths import InvalidAdapterError, resolve_inside
from tests.support.adapter_factory import (
    KINDS,
    build_peft_model,
    corrupt_safetensors,
    edit_config,
    make_adapter,
    make_pickle_only,
    make_wrong_shape_adapter,
    remove_config,
    tiny_llama,
)

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def base():
    return tiny_llama()


@pytest.fixture(scope="module")
def root(tmp_path_factory, base):
    """One adapter root with a valid adapter of every kind."""
    root = tmp_path_factory.mktemp("adapters")
    for kind in KINDS:
        extra = {"feedforward_modules": ["down_proj"]} if kind == "ia3" else {}
        make_adapter(root / kind, base, kind=kind, targets=("q_proj", "v_proj", "down_proj"), **extra)
    return root


def refused(root, relative, base, match, **kw) -> str:
    with pytest.raises(InvalidAdapterError, match=match) as info:
        inspect_adapter(root, relative, "x", base, **kw)
    return str(info.value)


def tamper(folder, fn):
    """Rewrite the safetensors file through fn(dict) -> dict."""
    tensors = load_file(folder / WEIGHTS)
    save_file({k: v.contiguous() for k, v in fn(tensors).items()}, folder / WEIGHTS)


# ---- valid adapters --------------------------------------------------------------------------------------------------

EXPECTED = {  # kind: (peft_type, rank, alpha, mixable)
    "lora": ("LORA", 4, 8.0, True),
    "dora": ("LORA", 4, 8.0, False),
    "adalora": ("ADALORA", 4, 8.0, False),
    "loha": ("LOHA", 4, 8.0, False),
    "lokr": ("LOKR", 4, 8.0, False),
    "ia3": ("IA3", None, None, False),
}


@pytest.mark.parametrize("kind", KINDS)
def test_valid_adapters_are_accepted(root, base, kind):
    spec = inspect_adapter(root, kind, f"my-{kind}_v1", base)
    assert isinstance(spec, AdapterSpec)
    assert (spec.peft_type, spec.rank, spec.alpha, spec.mixable) == EXPECTED[kind]
    assert spec.kind == kind
    assert spec.name == f"my-{kind}_v1"
    assert spec.target_modules == ["down_proj", "q_proj", "v_proj"]
    assert spec.path == (root / kind).resolve()
    assert spec.weights == (root / kind / WEIGHTS).resolve()
    files = (root / kind / WEIGHTS, root / kind / "adapter_config.json")
    assert spec.size_bytes == sum(f.stat().st_size for f in files)
    assert spec.config["peft_type"] == spec.peft_type
    assert len(spec.modules) == 6  # 3 projections x 2 layers


@pytest.mark.parametrize("kind", ["lora", "dora", "loha"])
def test_accepts_a_peft_wrapped_base_model(root, base, kind):
    """The served model is usually a PeftModel already holding other adapters: names are mapped through it."""
    wrapped = build_peft_model(
        base, "lora", targets=("q_proj", "k_proj"), adapter_name="resident", modules_to_save=["lm_head"]
    )
    assert inspect_adapter(root, kind, "x", wrapped).kind == kind
    assert inspect_adapter(root, kind, "x", wrapped.get_base_model()).kind == kind


@pytest.mark.parametrize("kind", KINDS)
def test_mixable_matches_what_peft_can_run_in_a_mixed_batch(root, base, kind):
    """mixable is exactly 'PEFT computes a correct mixed batch with adapter_names': DoRA and AdaLoRA raise,
    LoHa/LoKr/IA3 silently apply the active adapter to every row."""
    extra = {"feedforward_modules": ["down_proj"]} if kind == "ia3" else {}
    model = build_peft_model(base, kind, targets=("q_proj", "v_proj", "down_proj"), **extra)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        try:
            mixed = model(input_ids=ids, adapter_names=["default", "__base__"]).logits
            reference = base(input_ids=ids).logits
            adapted = model(input_ids=ids).logits
            works = torch.allclose(mixed[1], reference[1], atol=1e-5) and torch.allclose(
                mixed[0], adapted[0], atol=1e-5
            )
        except (ValueError, TypeError):
            works = False
    assert inspect_adapter(root, kind, "x", base).mixable is works


def test_regex_targets_layers_to_transform_and_rank_pattern(tmp_path, base):
    make_adapter(tmp_path / "regex", base, targets=r".*\.(q|o)_proj")
    assert inspect_adapter(tmp_path, "regex", "x", base).target_modules == ["o_proj", "q_proj"]
    make_adapter(tmp_path / "layer1", base, layers_to_transform=[1])
    assert inspect_adapter(tmp_path, "layer1", "x", base).modules == [
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    make_adapter(tmp_path / "pattern", base, r=4, rank_pattern={"q_proj": 8})
    assert inspect_adapter(tmp_path, "pattern", "x", base).rank == 8
    refused(tmp_path, "pattern", base, "rank 8 is above the limit of 6", max_rank=6)
    make_adapter(tmp_path / "nested/deeper", base)
    assert inspect_adapter(tmp_path, "nested/deeper", "x", base).kind == "lora"


def test_all_linear_shorthand(tmp_path, base):
    """PEFT expands 'all-linear' when saving; a config that still says 'all-linear' is expanded the same way
    (every Linear but the output head), also through a PEFT-wrapped model whose lm_head is wrapped."""
    edit_config(make_adapter(tmp_path / "a", base, targets="all-linear"), target_modules="all-linear")
    wrapped = build_peft_model(base, "lora", targets=("q_proj",), adapter_name="resident", modules_to_save=["lm_head"])
    for model in (base, wrapped):
        spec = inspect_adapter(tmp_path, "a", "x", model)
        assert spec.target_modules == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
        assert len(spec.modules) == 14
    edit_config(tmp_path / "a", exclude_modules=["down_proj"])  # PEFT would skip those tensors: refuse
    refused(tmp_path, "a", base, "'model.layers.0.mlp.down_proj', which target_modules does not select")


@pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`")
def test_embedding_targets_and_modules_to_save(tmp_path, base):
    make_adapter(tmp_path / "emb", base, targets=("embed_tokens", "q_proj"))  # also saves an identical embedding copy
    assert "model.embed_tokens" in inspect_adapter(tmp_path, "emb", "x", base).modules
    make_adapter(tmp_path / "save", base, modules_to_save=["lm_head"])
    assert inspect_adapter(tmp_path, "save", "x", base).mixable


# ---- paths -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "match"),
    [
        ("../../x", r"must not contain '\.\.'"),
        ("lora/../lora", r"must not contain '\.\.'"),
        ("..", r"must not contain '\.\.'"),
        ("/etc", "must be relative to the adapter root, not absolute"),
        ("~/x", "not absolute"),
        ("", "adapter path is empty"),
        ("nope", "adapter folder 'nope' does not exist"),
        ("lora/adapter_config.json", "is not a folder"),
    ],
)
def test_bad_paths_are_refused(root, base, relative, match):
    refused(root, relative, base, match)


def test_absolute_path_inside_root_is_still_refused(root, base):
    refused(root, str(root / "lora"), base, "not absolute")


def test_symlink_escaping_the_root_is_refused(tmp_path, base):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    make_adapter(outside / "evil", base)
    (root / "escape").symlink_to(outside / "evil", target_is_directory=True)
    refused(root, "escape", base, "resolves outside the adapter root")
    # a symlink that stays inside the root is fine
    make_adapter(root / "real", base)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert inspect_adapter(root, "alias", "x", base).path == (root / "real").resolve()
    # so is a folder inside the root whose weights file links outside it: refused
    make_adapter(root / "half", base)
    (root / "half" / WEIGHTS).unlink()
    (root / "half" / WEIGHTS).symlink_to(outside / "evil" / WEIGHTS)
    refused(root, "half", base, "adapter_model.safetensors is a symlink that resolves outside the adapter root")


def test_resolve_inside_returns_the_resolved_folder(root):
    assert resolve_inside(root, "lora") == (root / "lora").resolve()
    assert resolve_inside(root, "./lora/") == (root / "lora").resolve()
    with pytest.raises(InvalidAdapterError, match="does not exist"):
        resolve_inside(root / "missing-root", "lora")


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a/b", "../x", "sp ace", "x" * 65, "naïve"])
def test_bad_names_are_refused(root, base, name):
    with pytest.raises(InvalidAdapterError, match="invalid adapter name"):
        inspect_adapter(root, "lora", name, base)


# ---- config ----------------------------------------------------------------------------------------------------------


def test_missing_config(tmp_path, base):
    remove_config(make_adapter(tmp_path / "a", base))
    refused(tmp_path, "a", base, "adapter_config.json is missing")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "adapter_config.json is not valid JSON"),
        ("[1, 2]", "must contain a JSON object"),
        (json.dumps({"task_type": "CAUSAL_LM"}), "peft_type is missing"),
    ],
)
def test_unparseable_config(tmp_path, base, content, match):
    folder = make_adapter(tmp_path / "a", base)
    (folder / "adapter_config.json").write_text(content)
    refused(tmp_path, "a", base, match)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"peft_type": "PROMPT_TUNING"}, "unsupported peft_type 'PROMPT_TUNING'"),
        ({"peft_type": "VERA"}, "unsupported peft_type"),
        ({"task_type": "SEQ_CLS"}, "task_type 'SEQ_CLS' is not a causal-LM adapter"),
        ({"alora_invocation_tokens": [5, 6]}, "LoRA variant.*alora_invocation_tokens.*not supported"),
        ({"init_lora_weights": "mica"}, "LoRA variant.*init_lora_weights=mica"),
        ({"lora_bias": True}, "lora_bias=True are not supported"),
        ({"r": "four"}, "r must be a positive integer"),
        ({"target_modules": None}, "target_modules is missing"),
        (
            {"target_modules": ["q_proj", "nonexistent_proj"]},
            "target modules not found in the base model: nonexistent_proj",
        ),
        ({"target_modules": r".*\.nothing_here"}, "match no module of the base model"),
        ({"target_modules": r".*\.self_attn"}, "is a LlamaAttention; only Linear, Conv1D and Embedding"),
        ({"target_modules": ["q_proj"]}, "which target_modules does not select"),
        ({"r": 2}, r"has shape \[4, 64\] but the base model and config need \[2, 64\]"),
    ],
)
def test_bad_config_values(tmp_path, base, changes, match):
    edit_config(make_adapter(tmp_path / "a", base), **changes)
    refused(tmp_path, "a", base, match)


def test_task_type_may_be_absent(tmp_path, base):
    edit_config(make_adapter(tmp_path / "a", base), task_type=None)
    assert inspect_adapter(tmp_path, "a", "x", base).kind == "lora"


# ---- weights files ---------------------------------------------------------------------------------------------------


def test_pickle_only_is_refused_without_unpickling(tmp_path, base, monkeypatch):
    make_pickle_only(tmp_path / "a", base)

    def forbidden(*a, **k):
        raise AssertionError("inspect_adapter must never unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    message = refused(tmp_path, "a", base, "pickle weights are not loaded; convert to safetensors")
    assert "adapter_model.bin" in message


def test_missing_weights(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    (folder / WEIGHTS).unlink()
    refused(tmp_path, "a", base, "adapter_model.safetensors is missing")


@pytest.mark.parametrize("mode", ["garbage", "truncate", "header"])
def test_corrupt_safetensors(tmp_path, base, mode):
    corrupt_safetensors(make_adapter(tmp_path / "a", base), mode)
    refused(tmp_path, "a", base, "adapter_model.safetensors is corrupt or not a safetensors file")


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_shapes(tmp_path, kind):
    """An adapter trained for a model with hidden size 32 against the hidden-64 base."""
    base = tiny_llama()
    extra = {"feedforward_modules": ["v_proj"]} if kind == "ia3" else {}
    make_wrong_shape_adapter(tmp_path / "a", kind=kind, **extra)
    message = refused(tmp_path, "a", base, "but the base model and config need")
    assert "different base model" in message


def test_size_limit(root, base):
    refused(root, "lora", base, "above the limit of 1000 bytes", max_bytes=1000)


@pytest.mark.parametrize("kind", ["lora", "adalora", "loha", "lokr"])
def test_rank_limit(tmp_path, base, kind):
    make_adapter(tmp_path / "a", base, kind=kind, r=8)
    refused(tmp_path, "a", base, "adapter rank 8 is above the limit of 4", max_rank=4)
    assert inspect_adapter(tmp_path, "a", "x", base, max_rank=8).rank == 8


@pytest.mark.parametrize("kind", KINDS)
def test_zero_effect_adapters(tmp_path, base, kind):
    extra = {"feedforward_modules": ["down_proj"]} if kind == "ia3" else {}
    make_adapter(tmp_path / "a", base, kind=kind, zero_b=True, targets=("q_proj", "down_proj"), **extra)
    refused(tmp_path, "a", base, "adapter would not change the model's output")


def test_zero_alpha_has_no_effect(tmp_path, base):
    make_adapter(tmp_path / "a", base, alpha=0)
    refused(tmp_path, "a", base, "would not change the model's output")


def test_dora_with_zero_b_but_changed_magnitude_is_accepted(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base, kind="dora", zero_b=True)
    tamper(folder, lambda t: {k: v * 1.5 if "magnitude" in k else v for k, v in t.items()})
    assert inspect_adapter(tmp_path, "a", "x", base).kind == "dora"


def test_empty_weights_file(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    save_file({}, folder / WEIGHTS)
    refused(tmp_path, "a", base, "adapter contains no weights")


def test_tensor_for_a_module_the_base_lacks(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    tamper(folder, lambda t: {k.replace("layers.1.", "layers.7."): v for k, v in t.items()})
    refused(tmp_path, "a", base, "'model.layers.7.self_attn.q_proj', which does not exist in the base model")


def test_incomplete_module(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    tamper(folder, lambda t: {k: v for k, v in t.items() if not k.endswith("layers.0.self_attn.q_proj.lora_B.weight")})
    refused(tmp_path, "a", base, "incomplete weights for module 'model.layers.0.self_attn.q_proj': missing lora_B")


def test_targeted_module_without_weights(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    tamper(folder, lambda t: {k: v for k, v in t.items() if "layers.1.self_attn.v_proj" not in k})
    refused(tmp_path, "a", base, r"missing weights for targeted module\(s\): model.layers.1.self_attn.v_proj")


def test_unexpected_tensor(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    tamper(folder, lambda t: {**t, "base_model.model.something.else": torch.ones(3)})
    refused(tmp_path, "a", base, "unexpected tensor 'something.else'")


def test_non_finite_weights(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base)
    tamper(folder, lambda t: {k: v.fill_(float("nan")) if "lora_A" in k else v for k, v in t.items()})
    refused(tmp_path, "a", base, "contains NaN or infinite values")


def test_dora_magnitude_shape_is_checked(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base, kind="dora")
    tamper(folder, lambda t: {k: v[:-1] if "magnitude" in k else v for k, v in t.items()})
    refused(
        tmp_path,
        "a",
        base,
        r"lora_magnitude_vector for module .* has shape \[63\] but the base model and config "
        r"need \[64\]",
    )


def test_adalora_rank_must_match_init_r(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base, kind="adalora", r=4)
    tamper(folder, lambda t: {k: (v[:, :2] if k.endswith("lora_B") else v[:2]) for k, v in t.items()})
    refused(tmp_path, "a", base, "has rank 2 but the config")


@pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`")
def test_saved_base_weights_that_differ_are_refused(tmp_path, base):
    """An embedding-targeting LoRA saves the embedding matrix; a modified copy would overwrite the shared base."""
    folder = make_adapter(tmp_path / "a", base, targets=("embed_tokens", "q_proj"))
    tamper(folder, lambda t: {k: v + 1 if k.endswith("embed_tokens.base_layer.weight") else v for k, v in t.items()})
    refused(tmp_path, "a", base, "would overwrite a base-model weight shared by every request")


def test_inspect_does_not_touch_the_model(root, base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    for kind in KINDS:
        inspect_adapter(root, kind, "x", base)
    after = base.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

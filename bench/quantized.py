"""Quality and speed of the packed CPU paths (TONEWATCH_QUANTIZE=fp16 / int8) against fp32, side by side.

Quality, on the 40 held-out support questions, greedy 48 tokens, for the base model and each shipped adapter
(adapters stay fp32 on the packed base): exact agreement of the continuation with fp32, the share of tokens before
the first divergence, and whether the tone scorer gives the same label (and how far its dimensions move).
Speed: plain generate at batch 1 and 16, variants alternated within one run, medians.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, write

MAX_TOKENS = 48
VARIANTS = ["fp32", "fp16", "int8"]
ADAPTERS = ["support-friendly", "support-formal", "support-robotic"]


def load_variant(mode: str):
    from peft import PeftModel

    from app.config import Settings
    from app.engine import quantize
    from app.engine.provision import load_base_model, resolve_base_model

    settings = Settings()
    source = resolve_base_model(settings.base_model)
    model, tokenizer = load_base_model(source, settings.model_cache_dir, "cpu", "float32")
    if mode != "fp32":
        quantize.quantize(model, mode)
    root = settings.adapter_root
    model = PeftModel.from_pretrained(model, str(root / ADAPTERS[0]), adapter_name=ADAPTERS[0])
    for name in ADAPTERS[1:]:
        model.load_adapter(str(root / name), adapter_name=name)
    model.eval()
    return model, tokenizer


def prompts(tokenizer) -> list[list[int]]:
    rows = [json.loads(line) for line in (ROOT / "data/support/heldout_questions.jsonl").read_text().splitlines()]
    encoded = [tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True) for r in rows]
    return [list(e["input_ids"] if hasattr(e, "keys") else e) for e in encoded]


def generate(model, tokenizer, batch: list[list[int]], adapter: str | None) -> list[list[int]]:
    import torch

    width = max(len(p) for p in batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    # one adapter per batch, so the plain PEFT path (DoRA cannot take adapter_names)
    context = model.disable_adapter() if adapter is None else contextlib.nullcontext()
    if adapter is not None:
        model.set_adapter(adapter)
    with torch.no_grad(), context:
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=pad
        )
    rows = []
    for row in out[:, width:].tolist():
        cut = list(row)
        while cut and cut[-1] == pad:
            cut.pop()
        rows.append(cut)
    return rows


def agreement(ref: list[int], other: list[int]) -> float:
    n = 0
    for a, b in zip(ref, other, strict=False):
        if a != b:
            break
        n += 1
    return n / max(1, len(ref))


def speed(model, tokenizer, batch: list[list[int]], size: int) -> float:
    sub = (batch * ((size // len(batch)) + 1))[:size]
    t0 = time.perf_counter()
    out = generate(model, tokenizer, sub, None)
    return sum(len(r) for r in out) / (time.perf_counter() - t0)


def run() -> dict:
    import torch

    from app.config import Settings
    from app.metrics import Metrics
    from app.scoring.scorer import ToneScorer

    torch.set_num_threads(2)
    settings = Settings()
    models = {mode: load_variant(mode) for mode in VARIANTS}
    tokenizer = models["fp32"][1]
    batch = prompts(tokenizer)
    outputs: dict[str, dict[str, list[list[int]]]] = {}
    for mode, (model, tok) in models.items():
        outputs[mode] = {a or "base": generate(model, tok, batch, a) for a in [None, *ADAPTERS]}
    scorer = ToneScorer.load(Metrics(), settings.style_dir, settings.persona_dir)

    def tones(rows: list[list[int]]) -> list:
        texts = [tokenizer.decode(r, skip_special_tokens=True) or "." for r in rows]
        return scorer._predict(texts)

    quality: dict[str, dict] = {}
    reference_tones = {k: tones(v) for k, v in outputs["fp32"].items()}
    for mode in VARIANTS[1:]:
        per_model = {}
        for key, rows in outputs[mode].items():
            ref = outputs["fp32"][key]
            t_ref, t_q = reference_tones[key], tones(rows)
            per_model[key] = {
                "identical": sum(a == b for a, b in zip(ref, rows, strict=True)) / len(ref),
                "prefix_agreement": statistics.fmean(agreement(a, b) for a, b in zip(ref, rows, strict=True)),
                "label_agreement": statistics.fmean(float(a.label == b.label) for a, b in zip(t_ref, t_q, strict=True)),
                "mean_abs_dim_change": {
                    d: statistics.fmean(abs(a.dims[d] - b.dims[d]) for a, b in zip(t_ref, t_q, strict=True))
                    for d in t_ref[0].dims
                },
            }
        quality[mode] = per_model
    speeds: dict[str, dict[str, list[float]]] = {m: {"1": [], "16": []} for m in VARIANTS}
    for _ in range(3):  # alternate the variants, take medians
        for mode, (model, tok) in models.items():
            for size in (1, 16):
                speeds[mode][str(size)].append(speed(model, tok, batch, size))
    medians = {m: {k: statistics.median(v) for k, v in s.items()} for m, s in speeds.items()}
    result = {
        "max_tokens": MAX_TOKENS,
        "questions": len(batch),
        "quality_vs_fp32": quality,
        "tokens_per_s_median": medians,
        "speedup_vs_fp32": {m: {k: medians[m][k] / medians["fp32"][k] for k in medians[m]} for m in VARIANTS},
        "linear_weight_bytes_per_param": {"fp32": 4, "fp16": 2, "int8": 1},
    }
    write("quantized", result)
    plot(result)
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    modes = list(result["tokens_per_s_median"])
    for k, size in enumerate(("1", "16")):
        a.bar(
            [i + 0.4 * k for i in range(len(modes))],
            [result["tokens_per_s_median"][m][size] for m in modes],
            0.4,
            label=f"batch {size}",
        )
    a.set_xticks([i + 0.2 for i in range(len(modes))])
    a.set_xticklabels(modes)
    a.set_ylabel("tokens/s (generate, median)")
    a.legend()
    q = result["quality_vs_fp32"]
    keys = list(next(iter(q.values())))
    for k, mode in enumerate(q):
        b.bar(
            [i + 0.4 * k for i in range(len(keys))],
            [q[mode][key]["label_agreement"] for key in keys],
            0.4,
            label=f"{mode}: tone label = fp32's",
        )
    b.set_xticks([i + 0.2 for i in range(len(keys))])
    b.set_xticklabels(keys, rotation=15)
    b.set_ylim(0, 1.05)
    b.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(Path(RESULTS) / "quantized.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in run().items() if k != "quality_vs_fp32"}, indent=2))

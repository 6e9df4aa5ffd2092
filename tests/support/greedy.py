"""Comparing greedy outputs across batch compositions without depending on the CPU's kernels.

A row's logits in a mixed or padded batch equal its solo logits only up to fp32 rounding, and the rounding differs
from CPU to CPU (AVX2 vs AVX-512 GEMM blocking). Where the top two tokens are closer than that rounding, greedy
decoding may take either, and from there the texts may legitimately part. So two greedy runs must agree token for
token up to the first step where the reference's top two are within `margin`; a divergence before that is a bug."""

from __future__ import annotations

from typing import Any

# fp32 logits of the bundled model (magnitude ~20) differ by ~1e-5 between batch compositions; 100x that is a
# near-tie. The tiny random models' logits are ~1e-1: their rounding differences are ~1e-8.
MARGIN = 1e-3
TINY_MARGIN = 1e-5


def decided_steps(choice: dict[str, Any], margin: float = MARGIN) -> int:
    """How many leading steps of an OpenAI choice (with logprobs and top_logprobs >= 2) are clear greedy choices."""
    steps = choice["logprobs"]["content"]
    for i, step in enumerate(steps):
        tops = sorted((t["logprob"] for t in step["top_logprobs"]), reverse=True)
        if len(tops) > 1 and tops[0] - tops[1] < margin:
            return i
    return len(steps)


def assert_same_greedy(reference: dict[str, Any], other: dict[str, Any], margin: float = MARGIN) -> None:
    """`other` took the same tokens as `reference` at every step the reference decided clearly; if no near-tie came
    up, the whole texts are equal."""
    ref_steps, other_steps = reference["logprobs"]["content"], other["logprobs"]["content"]
    decided = decided_steps(reference, margin)
    ref_tokens = [s["token"] for s in ref_steps[:decided]]
    other_tokens = [s["token"] for s in other_steps[:decided]]
    assert other_tokens == ref_tokens, (ref_tokens, other_tokens)
    if decided == len(ref_steps):
        assert other["message"]["content"] == reference["message"]["content"]


def reference_choice(model, tokenizer, prompt: list[int], n: int) -> dict[str, Any]:
    """The same shape as an engine's greedy choice, from transformers' own `generate` on one unpadded row."""
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, len(prompt) :].tolist()
    entries = []
    for token, scores in zip(tokens, out.scores, strict=True):
        logprobs = torch.log_softmax(scores[0].double(), dim=-1)
        values, ids = torch.topk(logprobs, 2)
        entries.append(
            {
                "token": tokenizer.decode([token]),
                "logprob": float(logprobs[token]),
                "top_logprobs": [
                    {"token": tokenizer.decode([int(i)]), "logprob": float(v)} for v, i in zip(values, ids, strict=True)
                ],
            }
        )
    return {
        "message": {"content": tokenizer.decode(tokens, skip_special_tokens=True)},
        "logprobs": {"content": entries},
    }

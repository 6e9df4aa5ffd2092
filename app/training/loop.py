"""The training loop of `tonewatch train-adapter`: a persona adapter (LoRA, DoRA, AdaLoRA, LoHa, LoKr) on the support
exchanges.

The adapter learns one voice (the ``persona`` response key: friendly, formal or robotic) from chat-format data with
the loss on the final assistant turn only (plus its end-of-turn token, so it learns to stop). There is no persona
system prompt by default: served requests carry none, so the adapter alone has to carry the voice.

Deterministic for a given config (seeded torch/random, data sorted by id, per-epoch permutations derived from the
seed); checkpoints and resume are in app.training.checkpoints, the training card in app.training.card.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.engine.cpu import cpu_name
from app.training.card import plot_loss, write_card
from app.training.checkpoints import WEIGHTS_FILE, load_checkpoint, save_checkpoint, seed_everything
from app.training.config import TrainConfig
from app.training.data import IGNORE_INDEX, batch_indices, build_examples, collate, data_sha256, load_exchanges

log = logging.getLogger("tonewatch.train")


# ---- model ------------------------------------------------------------------------------------------------------


def peft_config(config: TrainConfig):
    from peft import AdaLoraConfig, LoHaConfig, LoKrConfig, LoraConfig

    common: dict[str, Any] = {"task_type": "CAUSAL_LM", "target_modules": list(config.target_modules)}
    if config.layers is not None:
        common["layers_to_transform"] = list(config.layers)
    # the alpha arguments below: peft annotates them as int, but alpha is only a scale (alpha / r), and a float works
    if config.type in ("lora", "dora"):
        return LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,  # type: ignore[arg-type]
            lora_dropout=config.dropout,
            use_dora=config.type == "dora",
            **common,
        )
    if config.type == "adalora":
        return AdaLoraConfig(
            init_r=config.rank,
            target_r=max(1, config.rank // 2),
            lora_alpha=config.alpha,  # type: ignore[arg-type]
            lora_dropout=config.dropout,
            total_step=config.steps,
            tinit=config.steps // 10,
            tfinal=config.steps // 5,
            **common,
        )
    if config.type == "loha":
        return LoHaConfig(
            r=config.rank,
            alpha=config.alpha,  # type: ignore[arg-type]
            module_dropout=config.dropout,
            **common,
        )
    return LoKrConfig(
        r=config.rank,
        alpha=config.alpha,  # type: ignore[arg-type]
        module_dropout=config.dropout,
        **common,
    )


def load_base(config: TrainConfig, device: str):
    from app.config import Settings
    from app.engine.provision import load_base_model, resolve_base_model

    source = resolve_base_model(config.base_model)
    if config.quantize == "nf4":
        from app.engine.provision import materialize
        from app.training.quantized import load_nf4_base, require_bitsandbytes

        require_bitsandbytes()  # before materialize, which may convert a GGUF for minutes
        model, tokenizer = load_nf4_base(materialize(source, Settings().model_cache_dir), device)
        return model, tokenizer, source.name
    model, tokenizer = load_base_model(source, Settings().model_cache_dir, device, "float32")
    return model, tokenizer, source.name


def linear_warmup_decay(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``steps`` (0-based step)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (steps - step) / max(1, steps - warmup))


def lr_at(step: int, config: TrainConfig) -> float:
    return linear_warmup_decay(step, config.lr, config.warmup, config.steps)


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions; the output head runs only on those positions
    (on a 49k vocabulary that is a good part of a CPU step), same value as ``model(**batch).loss``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = inner.get_decoder(), inner.get_output_embeddings()
    if decoder is None or head is None or getattr(inner.config, "final_logit_softcapping", None):
        return model(**batch).loss
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


# ---- training ---------------------------------------------------------------------------------------------------


def train_adapter(config: TrainConfig) -> Path:
    """Train and write the adapter folder; returns its path."""
    from peft import get_peft_model
    from tqdm import tqdm

    from app.engine.provision import pick_device

    config.validated()
    started, cpu_started = time.perf_counter(), time.process_time()
    device = pick_device(config.device)
    seed_everything(config.seed)
    model, tokenizer, base_name = load_base(config, device)

    exchanges = load_exchanges(config.data)
    examples, skipped = build_examples(
        tokenizer, exchanges, config.persona, max_len=config.max_len, system_prompt=config.system_prompt
    )
    log.info("%d examples (%d skipped: longer than max_len)", len(examples), skipped)

    seed_everything(config.seed)  # adapter init depends only on the seed
    model = get_peft_model(model, peft_config(config))
    model.peft_config["default"].base_model_name_or_path = base_name
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = allocated_params = sum(p.numel() for p in params)
    if config.head_mask:
        n_params = _mask_heads(model, config)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    start_step = 0
    losses: list[float] = []
    if config.resume:
        restored = load_checkpoint(model, optimizer, config)
        if restored is not None:
            start_step, losses = restored
            log.info("resumed from %s at step %d", config.checkpoint_path, start_step)
        else:
            log.info("no checkpoint in %s; starting from scratch", config.checkpoint_path)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    is_adalora = config.type == "adalora"
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc=f"train {config.adapter_name}",
        unit="step",
        disable=False,
        mininterval=5.0,
    )
    for step in range(start_step, config.steps):
        batch = collate(
            [examples[i] for i in batch_indices(len(examples), config.batch_size, config.seed, step)], pad_id
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = causal_lm_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower lr")
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if is_adalora:
            model.base_model.update_and_allocate(step)
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", avg10=f"{np.mean(losses[-10:]):.3f}", lr=f"{lr:.2e}")
        bar.update(1)
        done = step + 1
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            save_checkpoint(model, optimizer, done, losses, config)
    bar.close()

    duration = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # wall time on a shared machine overstates the cost
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(output), safe_serialization=True, save_embedding_layers=False)
    (output / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template; TRAINING_CARD.md replaces it
    os.chmod(output / WEIGHTS_FILE, 0o644)  # safetensors writes 0600; the server may run as another user
    plot_loss(losses, output / "loss.png", config.adapter_name)
    size = (output / WEIGHTS_FILE).stat().st_size
    summary = {
        "name": config.adapter_name,
        "base_model": base_name,
        "examples": len(examples),
        "skipped": skipped,
        "target_tokens": sum(e.n_target for e in examples),
        "data_sha256": data_sha256(config.data),
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-10:])) if losses else None,
        "mean_loss": float(np.mean(losses)) if losses else None,
        "duration_s": round(duration, 1),
        "cpu_s": round(cpu_seconds, 1),
        "steps": config.steps,
        "torch_threads": torch.get_num_threads(),
        "resumed_from_step": start_step,
        "trainable_params": n_params,
        "allocated_params": allocated_params,
        "weights_bytes": size,
        "device": device,
        "cpu": cpu_name(),  # step time depends on it: name the CPU with the figure
        "torch": torch.__version__,
    }
    write_card(output / "TRAINING_CARD.md", config, summary)
    (output / "training_summary.json").write_text(
        json.dumps({**summary, "config": config.to_dict(), "losses": [round(x, 5) for x in losses]}, indent=1)
    )
    log.info("wrote %s (%d bytes, final loss %.4f, %.0f s)", output, size, summary["final_loss"] or 0.0, duration)
    return output


def _mask_heads(model, config: TrainConfig) -> int:
    """Restrict LoRA to the selected heads (zeroed + gradient-masked elsewhere); returns the entries that train."""
    from app.training.head_mask import HeadSelection, apply_head_mask

    assert config.head_mask is not None  # called only when a head selection is configured
    selection = HeadSelection.load(config.head_mask)
    if sorted(config.layers or []) != selection.layers:
        raise ValueError(f"layers must be the head selection's layers {selection.layers}, got {config.layers}")
    text = model.get_base_model().config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    counts = apply_head_mask(model, selection, head_dim)
    log.info("head mask %s: %d of %d LoRA entries train", config.head_mask, counts["trainable"], counts["allocated"])
    return counts["trainable"]

"""Train a persona adapter on the support exchanges: `tonewatch train-adapter` (the command line).

The work is split by concern: app.training.config (TrainConfig and the flags), app.training.loop (the model and the
training loop), app.training.checkpoints (save and resume), app.training.card (the training card and loss plot).

Output folder: ``adapter_config.json`` + ``adapter_model.safetensors`` (what the server loads), ``TRAINING_CARD.md``
and ``loss.png``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from app.training.config import build_parser, config_from_args
from app.training.loop import train_adapter
from app.training.quantized import QuantizationUnavailable


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        out = train_adapter(config)
    except QuantizationUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = json.loads((out / "training_summary.json").read_text())
    print(json.dumps({k: summary[k] for k in ("name", "examples", "final_loss", "duration_s", "weights_bytes")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

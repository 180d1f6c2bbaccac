"""Any local Hugging Face vision model directory as an ImageEncoder (CLIP, DINOv2, ViT, SigLIP, ...).

For teams that have one: `imaging.encoder = "huggingface"` and `imaging.hf_model_path`. Nothing is
trained; the directory's content hash names the encoder version, registered on first use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class HuggingFaceImageEncoder:
    def __init__(self, path: Path, *, version: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoImageProcessor, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
        self.version = version
        self.processor = AutoImageProcessor.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        self._clip_like = hasattr(self.model, "get_image_features")
        with torch.no_grad():
            self.dim = int(self._features([np.zeros((8, 8), dtype=np.uint8)]).shape[1])

    def _features(self, images: Sequence[np.ndarray]):  # type: ignore[no-untyped-def]
        import torch
        from PIL import Image

        rgb = [Image.fromarray(np.asarray(i, dtype=np.uint8)).convert("RGB") for i in images]
        inputs = self.processor(images=rgb, return_tensors="pt")
        with torch.no_grad():
            if self._clip_like:
                features = self.model.get_image_features(pixel_values=inputs["pixel_values"])
                return getattr(features, "pooler_output", features)
            out = self.model(pixel_values=inputs["pixel_values"])
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state[:, 0]

    def encode(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            vectors = self._features(images[start : start + batch_size]).float().numpy()
            out.append(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), dtype=np.float32)

"""A small PNG rendering of a stored (already de-identified) image, for reviewers and the web page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from kbservice.config import ImagingSettings
from kbservice.imaging.readers import read_image

PREVIEW_MAX_SIDE = 256


def preview_png(stored_file: Path, settings: ImagingSettings, *, max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    """The stored file's pixels (the frame or slice the encoders read, windowed as they read it) as an 8-bit
    grey PNG whose longer side is at most `max_side`, aspect kept. Only pixels are written: no metadata."""
    grey = np.clip(np.rint(read_image(stored_file, settings).pixels * 255.0), 0, 255).astype(np.uint8)
    return pixels_png(grey, max_side=max_side)


def pixels_png(grey: np.ndarray, *, max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    """8-bit grey pixels as a PNG whose longer side is `max_side` at most (smaller ones are enlarged to it
    with nearest-neighbour, so a 64-pixel model input stays visibly pixelated rather than blurred)."""
    from PIL import Image

    rows, columns = grey.shape
    scale = max_side / max(rows, columns)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    image = Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).resize(size, resample)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

"""An image file -> read, de-identified, normalised and content-addressed: ready to store with its case.

The stored file is never the submitted one: DICOM is de-identified (deid.py) and re-written; PNG and JPEG
are re-encoded as PNG from their pixels, which drops every metadata chunk (text, EXIF, ICC); NIfTI has
its free-text header fields blanked. Only then is anything hashed or written.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kbservice.config import ImagingSettings
from kbservice.imaging import deid
from kbservice.imaging.readers import ImageRead, model_input, read_image
from kbservice.types import RequestImage

BITMAP_METHOD = "re-encoded as PNG from pixels: metadata chunks (text, EXIF) dropped"
NIFTI_METHOD = "NIfTI free-text header fields (descrip, aux_file, db_name, intent_name) blanked"
_NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")


@dataclass(frozen=True)
class PreparedImage:
    format: str
    modality: str | None
    source_shape: tuple[int, ...]
    stored_bytes: bytes
    extension: str
    sha256: str
    pixels: np.ndarray  # uint8 (size, size): what encoders read
    header: Any
    deid_method: str

    def row(self, *, stored_path: str, ordinal: int) -> dict[str, Any]:
        """The `images` row (without case id and timestamps)."""
        return {
            "ordinal": ordinal,
            "sha256": self.sha256,
            "format": self.format,
            "modality": self.modality,
            "source_shape": list(self.source_shape),
            "stored_path": stored_path,
            "pixel_size": int(self.pixels.shape[0]),
            "pixels": self.pixels.tobytes(),
            "header": self.header,
            "deidentified": True,
            "deid_method": self.deid_method,
        }


def prepare_image(path: Path, *, settings: ImagingSettings, secret: bytes) -> PreparedImage:
    """`path` read, de-identified and normalised (ImageReadError when it cannot be read)."""
    read = read_image(path, settings)
    pixels = model_input(read.pixels, settings.size)
    if read.format == "dicom":
        stored, header, method, extension = _dicom(read, secret)
    elif read.format == "nifti":
        stored, header, method, extension = _nifti(path)
    else:
        stored, header, method, extension = _bitmap(read)
    return PreparedImage(
        format=read.format,
        modality=read.modality,
        source_shape=read.source_shape,
        stored_bytes=stored,
        extension=extension,
        sha256=hashlib.sha256(stored).hexdigest(),
        pixels=pixels,
        header=header,
        deid_method=method,
    )


def _dicom(read: ImageRead, secret: bytes) -> tuple[bytes, Any, str, str]:
    dataset = read.dataset
    deid.deidentify_dataset(dataset, secret=secret)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue(), deid.header_elements(dataset), deid.METHOD, "dcm"


def _bitmap(read: ImageRead) -> tuple[bytes, Any, str, str]:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.rint(read.pixels * 65535).astype(np.uint16)).save(out, format="PNG")
    header = {"source_format": read.format, "shape": list(read.source_shape), "bit_depth": 16}
    return out.getvalue(), header, BITMAP_METHOD, "png"


def _nifti(path: Path) -> tuple[bytes, Any, str, str]:
    import nibabel

    image = nibabel.load(str(path))
    header = image.header.copy()
    for field in _NIFTI_TEXT_FIELDS:
        if field in header:
            header[field] = b""
    clean = nibabel.Nifti1Image(np.asanyarray(image.dataobj), image.affine, header)
    out = io.BytesIO()
    holder = nibabel.FileHolder(fileobj=out)
    clean.to_file_map({"header": holder, "image": holder})
    summary = {
        "shape": [int(n) for n in clean.shape],
        "datatype": str(clean.get_data_dtype()),
        "zooms": [float(z) for z in clean.header.get_zooms()],
    }
    return out.getvalue(), summary, NIFTI_METHOD, "nii"


def request_pixels(path: Path, *, settings: ImagingSettings) -> np.ndarray:
    """The normalised pixels of an image in a request: nothing of the file (name, header) is kept, so
    nothing identifying reaches the prompt, the audit or the stored request."""
    return model_input(read_image(path, settings).pixels, settings.size)


def request_images(paths: list[Path], *, settings: ImagingSettings) -> tuple[RequestImage, ...]:
    """The images of a request, read and normalised (ImageReadError names a bad file)."""
    return tuple(RequestImage.of(request_pixels(path, settings=settings)) for path in paths)


def write_png(pixels: np.ndarray, path: Path) -> Path:
    """Writes 8-bit grey pixels as a PNG file (benchmarks turn arrays of images into case files)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, format="PNG")
    return path


def store_file(image: PreparedImage, images_dir: Path) -> str:
    """Writes the de-identified file content-addressed (idempotent) and returns its path under images_dir.
    Written before the SQL transaction: a file whose transaction failed is unreferenced, never wrong."""
    relative = f"{image.sha256[:2]}/{image.sha256}.{image.extension}"
    target = images_dir / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".partial")
        partial.write_bytes(image.stored_bytes)
        os.replace(partial, target)
    return relative

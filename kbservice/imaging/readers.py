"""Image readers: DICOM (pydicom), PNG/JPEG (Pillow), NIfTI (nibabel) -> one normalised 2-D array.

Every reader ends in the same place: a float32 array in [0, 1], one channel, brighter = denser, which
`model_input` resizes to the configured square. Anything that cannot honestly become that (empty,
truncated, not an image, absurdly large) is an ImageReadError naming the file and the reason, raised
before anything is stored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kbservice.config import ImagingSettings
from kbservice.errors import ImageReadError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ImageRead:
    format: str  # "dicom", "png", "jpeg" or "nifti"
    modality: str | None  # from the DICOM header ("CT", "MR", "CR", ...); None when the file does not say
    pixels: np.ndarray  # float32 (rows, columns) in [0, 1]
    source_shape: tuple[int, ...]  # the stored array's shape (frames, volume axes included)
    dataset: Any = None  # the pydicom Dataset as read (NOT de-identified); DICOM only


_CLAIMED_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom", ".dicom": "dicom"}


def sniff_format(path: Path, head: bytes) -> str:
    """The format by content (extension only for NIfTI, whose magic sits mid-header). A file whose name
    claims another image format than its bytes is refused: it was mislabelled somewhere, and which of the
    two the sender meant cannot be known."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        found = "dicom"
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        found = "png"
    elif head.startswith(b"\xff\xd8\xff"):
        found = "jpeg"
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        return "nifti"
    elif path.suffix.lower() == ".dcm":
        return "dicom"  # a DICOM file without the preamble; pydicom decides
    else:
        raise ImageReadError(f"{path}: not a DICOM, PNG, JPEG or NIfTI image")
    claimed = "nifti" if path.name.lower().endswith(NIFTI_SUFFIXES) else _CLAIMED_BY_SUFFIX.get(path.suffix.lower())
    if claimed is not None and claimed != found:
        raise ImageReadError(f"{path}: the bytes are a {found.upper()} image, not the {claimed.upper()} its name says")
    return found


def read_image(path: Path, settings: ImagingSettings) -> ImageRead:
    """The image at `path` as a normalised 2-D array; ImageReadError when it cannot be."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    if size > settings.max_file_mb * 1024 * 1024:
        raise ImageReadError(f"{path}: {size / 1e6:.1f} MB is over the {settings.max_file_mb:g} MB limit")
    data = path.read_bytes()
    kind = sniff_format(path, data[:132])
    reader = {"dicom": _read_dicom, "png": _read_bitmap, "jpeg": _read_bitmap, "nifti": _read_nifti}[kind]
    try:
        return reader(path, data, kind, settings)
    except ImageReadError:
        raise
    except Exception as exc:  # every library has its own failures for truncated or corrupt files
        raise ImageReadError(f"{path}: not a readable {kind.upper()} image ({type(exc).__name__}: {exc})") from exc


def _check_size(path: Path, shape: tuple[int, ...], settings: ImagingSettings) -> None:
    if not shape or any(n <= 0 for n in shape):
        raise ImageReadError(f"{path}: the image has no pixels (shape {shape})")
    if int(np.prod(shape, dtype=np.int64)) > settings.max_pixels:
        raise ImageReadError(f"{path}: {shape} is {np.prod(shape):,} pixels, over the {settings.max_pixels:,} limit")


def _read_dicom(path: Path, data: bytes, kind: str, settings: ImagingSettings) -> ImageRead:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data), force=path.suffix.lower() == ".dcm")
    if "PixelData" not in dataset:
        raise ImageReadError(f"{path}: the DICOM file holds no pixel data")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    _check_size(path, (frames, rows, columns), settings)
    array = dataset.pixel_array
    if frames > 1:
        index = frames // 2 if settings.dicom_frame == "middle" else settings.dicom_frame
        if not 0 <= index < frames:
            raise ImageReadError(f"{path}: frame {index} asked for, the file has {frames}")
        array = array[index]
    if array.ndim == 3:  # colour (RGB / YBR decoded to RGB): luminance
        array = array[..., :3] @ np.array([0.299, 0.587, 0.114])
    values = array.astype(np.float64)
    values = values * float(dataset.get("RescaleSlope", 1) or 1) + float(dataset.get("RescaleIntercept", 0) or 0)
    modality = str(dataset.get("Modality", "")) or None
    window = _window(dataset, settings) if modality == "CT" else None
    pixels = _windowed(values, window) if window else _min_max(values)
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = 1.0 - pixels  # MONOCHROME1 stores dense as dark; every array here has dense as bright
    return ImageRead(
        format=kind, modality=modality, pixels=pixels, source_shape=tuple(dataset.pixel_array.shape), dataset=dataset
    )


def _window(dataset: Any, settings: ImagingSettings) -> tuple[float, float] | None:
    if settings.ct_window_center is not None and settings.ct_window_width is not None:
        return settings.ct_window_center, settings.ct_window_width
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    return _first_value(center), _first_value(width)


def _first_value(value: Any) -> float:
    """A window attribute may hold several windows (MultiValue); the first is the default one."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def _windowed(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    center, width = window
    low = center - width / 2
    return np.clip((values - low) / max(width, 1e-6), 0.0, 1.0).astype(np.float32)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _read_bitmap(path: Path, data: bytes, kind: str, settings: ImagingSettings) -> ImageRead:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.max_pixels  # Pillow's own bomb check (process-wide) uses the same limit
    try:
        opened = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: {exc.args[0].split(',')[0]}; over the {settings.max_pixels:,} limit") from exc
    with opened as image:
        _check_size(path, (image.height, image.width), settings)
        image.load()  # truncated files fail here, not later
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            values = np.asarray(image, dtype=np.float64)
        else:
            values = np.asarray(image.convert("L"), dtype=np.float64)
    return ImageRead(format=kind, modality=None, pixels=_min_max(values), source_shape=tuple(values.shape))


def _read_nifti(path: Path, data: bytes, kind: str, settings: ImagingSettings) -> ImageRead:
    import nibabel

    raw = data
    if path.name.lower().endswith(".gz"):
        import gzip

        # Read at most what the largest allowed volume needs, so a small archive cannot inflate to gigabytes.
        cap = settings.max_pixels * 8 + (1 << 20)
        raw = gzip.GzipFile(fileobj=io.BytesIO(data)).read(cap + 1)
        if len(raw) > cap:
            raise ImageReadError(f"{path}: decompresses beyond the {settings.max_pixels:,}-pixel limit")
    holder = nibabel.FileHolder(fileobj=io.BytesIO(raw))
    image = nibabel.Nifti1Image.from_file_map({"header": holder, "image": holder})
    shape = tuple(int(n) for n in image.shape)
    _check_size(path, shape, settings)
    volume = np.asarray(image.dataobj, dtype=np.float64)
    while volume.ndim > 3:  # 4-D (time) series: the first volume
        volume = volume[..., 0]
    if volume.ndim == 3:
        axis = settings.nifti_axis
        if settings.nifti_projection == "mip":
            volume = volume.max(axis=axis)
        else:
            count = volume.shape[axis]
            index = count // 2 if settings.nifti_slice == "middle" else settings.nifti_slice
            if not 0 <= index < count:
                raise ImageReadError(f"{path}: slice {index} asked for, axis {axis} has {count}")
            volume = np.take(volume, index, axis=axis)
    return ImageRead(format=kind, modality=None, pixels=_min_max(np.rot90(volume)), source_shape=shape)


def model_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """`pixels` ([0, 1] floats) resized to size x size (bilinear) as uint8: what encoders read and SQL keeps."""
    from PIL import Image

    resized = Image.fromarray(pixels.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.rint(np.asarray(resized) * 255.0), 0, 255).astype(np.uint8)

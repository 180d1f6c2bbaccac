"""Image files for tests, written with the same libraries the readers use (no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    patient: str = "Doe^Jane",
    patient_id: str = "MRN-123456",
    study_date: str = "20240115",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    extra: dict | None = None,
) -> Path:
    """A DICOM file (implicit VR little endian, uint16 or int16 pixels, frames first if 3-D)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = study_date
    ds.Modality = modality
    ds.InstitutionName = "St Example Hospital"
    ds.ReferringPhysicianName = "Smith^John"
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    signed = pixels.dtype == np.int16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray, *, description: bytes = b"") -> Path:
    import nibabel

    image = nibabel.Nifti1Image(volume, np.eye(4))
    image.header["descrip"] = description
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))
    return path


def two_class_images(count: int, *, size: int = 16, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Noisy images whose class is where a bright blob sits (top or bottom half): learnable in seconds."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label = i % 2
        image = rng.normal(50, 12, (size, size))
        row = rng.integers(1, size // 2 - 4) + (size // 2 if label else 0)
        col = rng.integers(1, size - 5)
        image[row : row + 4, col : col + 4] += 180
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        labels.append(label)
    return images, labels

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbservice.config import ImagingSettings
from kbservice.errors import ImageReadError
from kbservice.imaging.readers import model_input, read_image
from tests.conftest import SHARED_DATA
from tests.imaging.images import write_dicom, write_nifti, write_png

SETTINGS = ImagingSettings()


def test_ct_rescale_and_window(tmp_path: Path) -> None:
    # Stored values 0..2000 with intercept -1000 are -1000..1000 HU; a 40/400 window maps -160 -> 0, 240 -> 1.
    stored = np.array([[0, 840], [1040, 1240]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, intercept=-1000, window=(40, 400))
    read = read_image(path, SETTINGS)
    assert read.format == "dicom" and read.modality == "CT"
    np.testing.assert_allclose(read.pixels, [[0.0, 0.0], [0.5, 1.0]], atol=1e-6)


def test_configured_ct_window_wins_over_the_files(tmp_path: Path) -> None:
    stored = np.array([[0, 1000], [2000, 1500]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, intercept=-1000, window=(40, 400))
    read = read_image(path, ImagingSettings(ct_window_center=0, ct_window_width=2000))
    np.testing.assert_allclose(read.pixels, [[0.0, 0.5], [1.0, 0.75]], atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    plain = read_image(write_dicom(tmp_path / "m2.dcm", stored, modality="CR"), SETTINGS).pixels
    inverted = read_image(
        write_dicom(tmp_path / "m1.dcm", stored, modality="CR", photometric="MONOCHROME1"), SETTINGS
    ).pixels
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)
    assert plain[1, 1] == 1.0 and inverted[1, 1] == 0.0  # dense is bright in every array


def test_multiframe_takes_the_middle_frame_or_the_configured_one(tmp_path: Path) -> None:
    frames = np.stack([np.full((4, 4), v, dtype=np.uint16) for v in (10, 20, 30)])
    frames[:, 0, 0] = 0  # each frame has a range, so min-max keeps the frames apart
    path = write_dicom(tmp_path / "mf.dcm", frames, modality="MR")
    middle = read_image(path, SETTINGS)
    first = read_image(path, ImagingSettings(dicom_frame=0))
    assert middle.source_shape == (3, 4, 4)
    assert middle.pixels[1, 1] == 1.0 and first.pixels[1, 1] == 1.0
    with pytest.raises(ImageReadError, match="frame 7"):
        read_image(path, ImagingSettings(dicom_frame=7))


def test_png_8_and_16_bit_and_jpeg(tmp_path: Path) -> None:
    from PIL import Image

    gradient = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    eight = read_image(write_png(tmp_path / "a.png", gradient), SETTINGS)
    sixteen = read_image(write_png(tmp_path / "b.png", gradient.astype(np.uint16) * 257), SETTINGS)
    np.testing.assert_allclose(eight.pixels, sixteen.pixels, atol=1e-6)
    Image.fromarray(gradient).save(tmp_path / "c.jpg", quality=95)
    jpeg = read_image(tmp_path / "c.jpg", SETTINGS)
    assert jpeg.format == "jpeg" and np.abs(jpeg.pixels - eight.pixels).max() < 0.05


def test_nifti_slice_and_maximum_intensity_projection(tmp_path: Path) -> None:
    volume = np.zeros((6, 6, 5), dtype=np.int16)
    volume[1, 1, 0] = 100  # only in the first slice along axis 2
    volume[4, 4, 2] = 50  # in the middle slice
    path = write_nifti(tmp_path / "v.nii.gz", volume)
    middle = read_image(path, SETTINGS)
    mip = read_image(path, ImagingSettings(nifti_projection="mip"))
    assert middle.source_shape == (6, 6, 5)
    assert np.count_nonzero(middle.pixels) == 1 and np.count_nonzero(mip.pixels) == 2
    assert mip.pixels.max() == 1.0


def test_model_input_is_a_square_uint8_array() -> None:
    out = model_input(np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20), 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8 and out.max() > 240 and out.min() < 15


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty"),
        ("notes.png", b"this is a text file, not an image at all", "not a DICOM, PNG, JPEG or NIfTI"),
        ("cut.png", None, "not a readable PNG"),
        ("cut.dcm", None, "not a readable DICOM"),
        ("png-bytes.jpg", "png", "the bytes are a PNG image, not the JPEG its name says"),
        ("png-bytes.dcm", "png", "the bytes are a PNG image, not the DICOM its name says"),
        ("dicom-bytes.png", "dicom", "the bytes are a DICOM image, not the PNG its name says"),
    ],
)
def test_unreadable_inputs_are_clear_errors(
    tmp_path: Path, name: str, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / name
    if content in ("png", "dicom"):  # a whole, readable image under another format's name
        pixels = np.full((64, 64), 7, dtype=np.uint8 if content == "png" else np.uint16)
        writer = write_png if content == "png" else write_dicom
        content = writer(tmp_path / f"whole.{'png' if content == 'png' else 'dcm'}", pixels).read_bytes()
    if content is None:  # a real file cut in half
        whole = (
            write_png(tmp_path / "whole.png", np.full((64, 64), 7, dtype=np.uint8))
            if name.endswith(".png")
            else (write_dicom(tmp_path / "whole.dcm", np.full((64, 64), 7, dtype=np.uint16)))
        )
        data = whole.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        read_image(path, SETTINGS)


def test_absurdly_large_images_are_refused(tmp_path: Path) -> None:
    path = write_png(tmp_path / "big.png", np.zeros((300, 300), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="over the 10,000 limit"):
        read_image(path, ImagingSettings(max_pixels=10_000))
    with pytest.raises(ImageReadError, match="MB limit"):
        read_image(path, ImagingSettings(max_file_mb=0.00001))


@pytest.mark.shared_data
def test_the_shared_dicom_and_nifti_samples_read() -> None:
    folder = SHARED_DATA / "dicom_samples"
    if not folder.exists():
        pytest.skip("../shared/data is absent")
    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR"), ("anatomical.nii", None)):
        read = read_image(folder / name, SETTINGS)
        assert read.modality == modality and read.pixels.min() == 0.0 and read.pixels.max() == 1.0


def test_a_small_archive_cannot_inflate_past_the_limit(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "bomb.nii.gz", np.zeros((200, 200, 50), dtype=np.int16))  # 4 MB of zeros
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageReadError, match="decompresses beyond"):
        read_image(path, ImagingSettings(max_pixels=1000))

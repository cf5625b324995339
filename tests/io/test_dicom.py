"""DICOM reading on the shared sample files and on variants the tests build from them."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, convert_color_space
from pydicom.uid import JPEGLossless

from medmtl.errors import DataError
from medmtl.io import read_grey, read_image, to_grey
from medmtl.io.dicom import CODEC_HINT
from tests.conftest import DICOM_DIR

CT = DICOM_DIR / "CT_small.dcm"
US_RGB = DICOM_DIR / "US1_UNCR.dcm"
US_PAL = DICOM_DIR / "gdcm-US-ALOKA-16.dcm"


def test_ct_modality_lut_signed_monochrome2():
    ds = pydicom.dcmread(CT)
    arr, meta = read_image(CT)
    assert ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
    assert np.array_equal(arr, ds.pixel_array.astype(np.float64) * 1.0 - 1024.0)
    assert meta.modality == "CT" and meta.rescale_intercept == -1024.0 and meta.bits_stored == 16
    assert meta.photometric_interpretation == "MONOCHROME2"
    assert meta.pixel_spacing_mm == pytest.approx((0.661468, 0.661468))


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    m2, _ = read_image(CT)
    m1, meta = read_image(tmp_path / "m1.dcm")
    assert meta.photometric_interpretation == "MONOCHROME1"
    assert np.array_equal(m1, m2.max() + m2.min() - m2)


def test_voi_window_from_file(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(tmp_path / "win.dcm")
    arr, meta = read_image(tmp_path / "win.dcm", apply_voi=True)
    assert (meta.window_center, meta.window_width) == (40.0, 400.0)
    hu, _ = read_image(tmp_path / "win.dcm")
    # pydicom's linear VOI maps to the full stored range: the window ends are its min and max
    assert arr[hu <= 40 - 0.5 - 199.5].max() == arr.min()
    assert arr[hu > 40 - 0.5 + 199.5].min() == arr.max()


def test_rgb_ultrasound_and_grey():
    arr, meta = read_image(US_RGB)
    assert arr.shape == (480, 640, 3) and arr.dtype == np.uint8
    assert meta.photometric_interpretation == "RGB" and meta.modality == "US"
    grey = read_grey(US_RGB)
    assert grey.shape == (480, 640) and grey.dtype == np.uint8


def test_ybr_full_converted_to_rgb(tmp_path):
    ds = pydicom.dcmread(US_RGB)
    rgb = ds.pixel_array
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(tmp_path / "ybr.dcm")
    arr, meta = read_image(tmp_path / "ybr.dcm")
    assert meta.photometric_interpretation == "YBR_FULL"
    assert np.abs(arr.astype(int) - rgb.astype(int)).max() <= 2


def test_palette_colour_and_ultrasound_regions():
    ds = pydicom.dcmread(US_PAL)
    arr, meta = read_image(US_PAL)
    assert np.array_equal(arr, apply_color_lut(ds.pixel_array, ds))
    assert meta.photometric_interpretation == "PALETTE COLOR"
    assert meta.us_regions == [(32, 24, 335, 415), (336, 24, 639, 415)]
    assert meta.pixel_spacing_mm == pytest.approx((0.38265, 0.38265), abs=1e-4)
    crop, cmeta = read_image(US_PAL, crop_us_region=1)
    assert crop.shape[:2] == (392, 304) and cmeta.cropped_to == (336, 24, 639, 415)
    assert np.array_equal(crop, arr[24:416, 336:640])
    assert to_grey(crop).dtype == np.uint16
    with pytest.raises(DataError, match="region 5 does not exist"):
        read_image(US_PAL, crop_us_region=5)
    with pytest.raises(DataError, match="no ultrasound regions"):
        read_image(CT, crop_us_region=True)


def test_multiframe_pick_a_frame(tmp_path):
    ds = pydicom.dcmread(CT)
    frames = np.stack([ds.pixel_array + i for i in range(3)]).astype(np.int16)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "mf.dcm")
    arr, meta = read_image(tmp_path / "mf.dcm", frame=2)
    assert meta.number_of_frames == 3 and meta.frame == 2
    assert np.array_equal(arr, frames[2].astype(np.float64) - 1024)
    with pytest.raises(DataError, match="frame=3 but the file has 3 frames"):
        read_image(tmp_path / "mf.dcm", frame=3)


def test_compressed_without_codec_names_the_extra(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.file_meta.TransferSyntaxUID = JPEGLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3broken\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm")
    try:
        import pylibjpeg  # noqa: F401

        pytest.skip("codec installed")
    except ImportError:
        pass
    with pytest.raises(DataError, match="JPEG Lossless") as err:
        read_image(tmp_path / "jpeg.dcm")
    assert CODEC_HINT in str(err.value)


def test_not_dicom_no_pixels_and_empty(tmp_path):
    (tmp_path / "fake.dcm").write_text("this is not DICOM")
    with pytest.raises(DataError, match=r"fake\.dcm: not a DICOM file"):
        read_image(tmp_path / "fake.dcm")
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(DataError, match="without pixel data"):
        read_image(tmp_path / "nopix.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_image(tmp_path / "empty.dcm")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_image(tmp_path / "empty.png")


def test_dicom_without_extension_is_recognised(tmp_path):
    (tmp_path / "IM0001").write_bytes(CT.read_bytes())
    arr, meta = read_image(tmp_path / "IM0001")
    assert meta.format == "dicom" and arr.shape == (128, 128)


def test_16bit_png_kept_as_uint16(tmp_path):
    from PIL import Image

    data = (np.arange(64 * 64).reshape(64, 64) * 7).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "x16.png")
    arr, meta = read_image(tmp_path / "x16.png")
    assert arr.dtype == np.uint16 and np.array_equal(arr, data) and meta.bits_stored == 16

"""DICOM pixel data to a display-ready array with pydicom 3.

Order of operations (DICOM PS3.3 C.11): stored values -> modality LUT (rescale slope and
intercept) -> VOI LUT or window (optional) -> MONOCHROME1 inverted so that bright means
more echo/density everywhere. PALETTE COLOR is mapped through its LUT to RGB; YBR colour
spaces are converted to RGB by pydicom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmtl.errors import DataError
from medmtl.io.limits import check_pixel_count
from medmtl.io.meta import ImageMeta

CODEC_HINT = (
    "install the optional codecs with `pip install -e .[dicom-codecs]` "
    "(pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg)"
)


# what the reader supports; anything else is named in the error
PHOTOMETRIC = (
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB",
    "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
)  # fmt: skip
BITS_ALLOCATED = (1, 8, 16, 32)
# a pixel spacing outside this range (mm per pixel) is taken for a broken value: area unknown
PLAUSIBLE_SPACING_MM = (1e-4, 100.0)


def attribute(ds, key: str):
    """The value of ``key``, or None when it is missing or cannot be decoded (a value that
    breaks its VR, e.g. ``NumberOfFrames='two'`` in an implicit-VR file)."""
    from pydicom.errors import BytesLengthException

    try:
        return ds.get(key)
    # OSError: a sequence whose bytes do not parse as items (read when first asked for)
    except (ValueError, TypeError, OverflowError, OSError, BytesLengthException):
        return _UNREADABLE


_UNREADABLE = "<unreadable value>"


def whole_number(ds, key: str, path: Path, default: int | None = None, low: int = 1) -> int:
    """The attribute ``key`` as an integer of at least ``low`` (``default`` when missing), or
    one line naming the file, the attribute, its value and the rule."""
    value = attribute(ds, key)
    if value is None or value == "":
        if default is None:
            raise DataError(f"{path}: {key} is missing; the file cannot be read as an image.")
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < low:
        raise DataError(f"{path}: {key}={value!r} is not a whole number of {low} or more.")
    return number


def positive_pair(value) -> tuple[float, float] | None:
    """A spacing attribute (two numbers, mm) when both are plausible spacings
    (:data:`PLAUSIBLE_SPACING_MM`), else None: a missing, zero, negative, malformed or absurd
    spacing means "size unknown", never 0."""
    try:
        pair = (float(value[0]), float(value[1]))
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    low, high = PLAUSIBLE_SPACING_MM
    return pair if all(low <= v <= high for v in pair) else None


def _whole(value) -> int | None:
    """A single whole number, or None (missing, text, several values, fractional)."""
    try:
        if (
            isinstance(value, (list, tuple))
            or hasattr(value, "__getitem__")
            and not isinstance(value, (str, int))
        ):
            return None
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return int(number) if np.isfinite(number) and number == int(number) else None


def check_frame(path: Path, frame: int, n_frames: int) -> None:
    """``frame`` must be one of the file's frames (a single-frame file has frame 0 only)."""
    if not 0 <= int(frame) < n_frames:
        raise DataError(
            f"{path}: frame={frame} but the file has {n_frames} frame"
            f"{'s' if n_frames != 1 else ''} (0..{n_frames - 1})."
        )


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        return (
            float(value[0])
            if hasattr(value, "__len__") and not isinstance(value, str)
            else float(value)
        )
    except (TypeError, ValueError, IndexError):
        return None


REGION_BOX = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
              "RegionLocationMaxY1")  # fmt: skip


def us_image_regions(
    ds, shape: tuple[int, int] | None = None
) -> list[tuple[int, int, int, int, float | None, float | None]]:
    """Tissue regions of ``SequenceOfUltrasoundRegions`` as (x0, y0, x1, y1, dx_mm, dy_mm).

    Only regions with a 2-D spatial format (RegionSpatialFormat 1) are kept, and only those
    whose box is four whole numbers with x0 ≤ x1 and y0 ≤ y1 starting inside the image
    (``shape``: rows, columns; a box reaching past the edge is clipped to it); a damaged region
    is left out. Physical deltas in cm (unit code 3) are converted
    to mm; any other unit, or a damaged delta, leaves the spacing unknown.
    """
    from pydicom.sequence import Sequence

    regions = attribute(ds, "SequenceOfUltrasoundRegions")
    if not isinstance(regions, Sequence):
        return []
    out = []
    for r in regions:
        if _whole(attribute(r, "RegionSpatialFormat")) != 1:
            continue
        box = [_whole(attribute(r, k)) for k in REGION_BOX]
        if any(v is None or v < 0 for v in box) or box[0] > box[2] or box[1] > box[3]:
            continue
        if shape is not None:  # writers differ on the last pixel: a box past the edge is clipped
            if box[0] >= shape[1] or box[1] >= shape[0]:
                continue
            box[2], box[3] = min(box[2], shape[1] - 1), min(box[3], shape[0] - 1)
        deltas = []
        for axis in ("X", "Y"):
            delta = _first(attribute(r, f"PhysicalDelta{axis}"))
            in_cm = _whole(attribute(r, f"PhysicalUnits{axis}Direction")) == 3
            deltas.append(delta * 10.0 if in_cm and delta is not None else None)
        out.append((box[0], box[1], box[2], box[3], deltas[0], deltas[1]))
    return out


def read_dicom(
    path: str | Path,
    frame: int = 0,
    apply_voi: bool = False,
    crop_us_region: bool | int = False,
) -> tuple[np.ndarray, ImageMeta]:
    """Read one frame of a DICOM file.

    Returns grey data as float64 after the modality LUT (and the VOI LUT/window with
    ``apply_voi=True``), or RGB (uint8/uint16) for colour data. ``crop_us_region=True`` crops to
    the largest ultrasound tissue region; an int picks a region by its position in the list.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes). Replace it with a valid DICOM file.")
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DataError(
            f"{path}: not a DICOM file (no DICM preamble) although it is named .dcm. "
            "Check the file or rename it to its real type."
        ) from exc
    except (OSError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: cannot be read as DICOM ({type(exc).__name__}: {exc}).") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(
            f"{path}: DICOM file without pixel data (a report or structured object?); "
            "only image objects can be read."
        )
    rows, columns = whole_number(ds, "Rows", path), whole_number(ds, "Columns", path)
    n_frames = whole_number(ds, "NumberOfFrames", path, default=1)
    check_frame(path, frame, n_frames)  # before decoding: a wrong frame costs nothing
    check_pixel_count(path, columns, rows, n_frames)
    photometric = str(attribute(ds, "PhotometricInterpretation") or "MONOCHROME2").strip()
    if photometric not in PHOTOMETRIC:
        raise DataError(
            f"{path}: PhotometricInterpretation {photometric!r} is not supported (supported: "
            f"{', '.join(PHOTOMETRIC)})."
        )
    bits = whole_number(ds, "BitsAllocated", path, default=8)
    stored = whole_number(ds, "BitsStored", path, default=bits)
    if bits not in BITS_ALLOCATED or stored > bits:
        raise DataError(
            f"{path}: BitsAllocated={bits}, BitsStored={stored} are not supported (BitsAllocated "
            f"one of {', '.join(map(str, BITS_ALLOCATED))}, BitsStored at most BitsAllocated)."
        )
    samples = whole_number(ds, "SamplesPerPixel", path, default=1)
    if samples not in (1, 3) or (samples == 3) != (photometric not in PHOTOMETRIC[:3]):
        raise DataError(
            f"{path}: SamplesPerPixel={samples} does not fit PhotometricInterpretation "
            f"{photometric!r} (1 for MONOCHROME and PALETTE COLOR, 3 for RGB and YBR)."
        )
    file_meta = getattr(ds, "file_meta", None)
    tsuid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(tsuid, "name", str(tsuid))
        raise DataError(
            f"{path}: pixel data in transfer syntax '{name}' cannot be decoded here; {CODEC_HINT}."
        ) from exc
    except Exception as exc:  # noqa: BLE001  (pydicom's decoders fail in many ways on bad files)
        raise DataError(
            f"{path}: pixel data is damaged or inconsistent with its attributes "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    expected = ((n_frames,) if n_frames > 1 else ()) + (rows, columns)
    if tuple(arr.shape[: len(expected)]) != expected:
        raise DataError(
            f"{path}: the pixel data is {arr.shape}, but NumberOfFrames, Rows and Columns say "
            f"{expected}; the file is inconsistent."
        )
    if n_frames > 1:
        arr = arr[frame]
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:  # noqa: BLE001  (the lookup table's many attributes)
            raise DataError(
                f"{path}: PALETTE COLOR without a usable palette lookup table "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise DataError(
                f"{path}: PALETTE COLOR lookup table gives {arr.shape[-1]} channels, not 3 (a "
                "damaged Red/Green/Blue palette)."
            )
    elif photometric.startswith("MONOCHROME"):
        for key in ("RescaleSlope", "RescaleIntercept"):
            if key in ds:
                value = _first(attribute(ds, key))
                if value is None or not np.isfinite(value):
                    raise DataError(f"{path}: {key}={attribute(ds, key)!r} is not a number.")
                del ds[key]  # the checked number, whatever VR it was written with
                setattr(ds, key, value)
        if "RescaleSlope" in ds and float(ds.RescaleSlope) == 0:
            raise DataError(f"{path}: RescaleSlope is 0: every pixel would have one value.")
        try:
            arr = apply_modality_lut(arr, ds).astype(np.float64)
            if apply_voi:
                arr = apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float64)
        except Exception as exc:  # noqa: BLE001  (a damaged ModalityLUTSequence or VOI LUT)
            raise DataError(
                f"{path}: the modality or VOI lookup table is damaged ({type(exc).__name__}: "
                f"{exc})."
            ) from exc
        if photometric == "MONOCHROME1":
            arr = arr.max() + arr.min() - arr
    # RGB and YBR_*: pydicom's pixel_array already returns RGB (as_rgb defaults to True)

    regions = us_image_regions(ds, (rows, columns))
    # a missing, zero, negative or malformed spacing: area unknown (never 0)
    spacing = positive_pair(attribute(ds, "PixelSpacing")) if "PixelSpacing" in ds else None
    if spacing is None and regions:
        spacing = positive_pair((regions[0][5], regions[0][4]))
    cropped = None
    if crop_us_region is not False and crop_us_region is not None:
        if not regions:
            raise DataError(
                f"{path}: crop_us_region asked for, but the file has no ultrasound regions."
            )
        if crop_us_region is True:
            pick = max(regions, key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
        else:
            if not 0 <= int(crop_us_region) < len(regions):
                raise DataError(
                    f"{path}: ultrasound region {crop_us_region} does not exist (0..{len(regions) - 1})."
                )
            pick = regions[int(crop_us_region)]
        x0, y0, x1, y1 = pick[:4]
        arr = arr[y0 : y1 + 1, x0 : x1 + 1]
        cropped = (x0, y0, x1, y1)
        spacing = positive_pair((pick[5], pick[4])) or spacing

    meta = ImageMeta(
        source=path.name,
        format="dicom",
        shape=tuple(int(s) for s in arr.shape),
        dtype=str(arr.dtype),
        modality=str(ds.get("Modality")) if ds.get("Modality") else None,
        bits_stored=stored if "BitsStored" in ds else None,
        bits_allocated=bits if "BitsAllocated" in ds else None,
        photometric_interpretation=photometric,
        pixel_spacing_mm=spacing,
        frame=frame if n_frames > 1 else None,
        number_of_frames=n_frames,
        window_center=_first(attribute(ds, "WindowCenter")),
        window_width=_first(attribute(ds, "WindowWidth")),
        rescale_slope=_first(attribute(ds, "RescaleSlope")),
        rescale_intercept=_first(attribute(ds, "RescaleIntercept")),
        transfer_syntax=getattr(tsuid, "name", None),
        us_regions=[r[:4] for r in regions],
        cropped_to=cropped,
    )
    return arr, meta

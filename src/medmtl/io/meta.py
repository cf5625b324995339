"""The PHI-free metadata record returned with every image.

Only technical fields are copied, from an explicit allow-list: nothing that identifies a
person (names, IDs, dates, institution, accession number) can reach it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ImageMeta:
    source: str  # file name only (no folder, which may carry a patient name)
    format: str  # "dicom", "png", "jpeg", ...
    shape: tuple[int, ...]
    dtype: str
    modality: str | None = None
    bits_stored: int | None = None
    bits_allocated: int | None = None
    photometric_interpretation: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    frame: int | None = None
    number_of_frames: int | None = None
    window_center: float | None = None
    window_width: float | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    transfer_syntax: str | None = None
    us_regions: list[tuple[int, int, int, int]] = field(default_factory=list)  # x0, y0, x1, y1
    cropped_to: tuple[int, int, int, int] | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def area_mm2(self, pixels: int) -> float | None:
        """The area of ``pixels`` pixels in mm² (3 decimals), or None without a pixel spacing."""
        sp = self.pixel_spacing_mm
        if not sp or not (sp[0] > 0 and sp[1] > 0):  # unknown: never a measured 0
            return None
        area = float(pixels) * sp[0] * sp[1]
        return round(area, 3) or float(f"{area:.3g}")  # a lesion's area is never shown as 0

"""Reading PNG/JPEG/TIFF/BMP/DICOM images and masks into arrays, with PHI-free metadata."""

from medmtl.io.image import is_dicom, read_grey, read_image, read_mask, to_grey
from medmtl.io.meta import ImageMeta

__all__ = ["ImageMeta", "is_dicom", "read_grey", "read_image", "read_mask", "to_grey"]

"""Reading images (PNG/JPEG/TIFF/BMP) and masks into numpy arrays."""

from medmtl.io.image import read_grey, read_mask

__all__ = ["read_grey", "read_mask"]

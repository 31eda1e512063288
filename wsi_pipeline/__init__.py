"""wsi-pipeline: whole-slide cervical cytology screening.

Coordinate convention (used everywhere, see ``wsi_pipeline.types``): level-0 pixels of the slide,
boxes as ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive, and the microns-per-pixel (mpp) of level 0
carried alongside any coordinates that leave the process.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wsi-pipeline")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

"""Reading whole-slide images at an explicit physical resolution.

``open_slide(path)`` picks a backend (a tifffile fast path that decodes only the file tiles a region
touches, OpenSlide, or an in-memory array for tests); every reader takes level-0 coordinates and
states the resolution it wants: ``reader.read_region(x, y, w, h, mpp=0.5)``.
"""

from wsi_pipeline.slide.open import open_slide
from wsi_pipeline.slide.reader import SlideError, SlideInfo, SlideReader, choose_level

__all__ = ["SlideError", "SlideInfo", "SlideReader", "choose_level", "open_slide"]

"""Whole-slide inference: patches in, one detection per lesion out, in level-0 pixels (``infer``, ``mine``)."""

"""The ``tile`` stage: slides -> foreground-filtered grids of patches -> per-slide patch stores."""

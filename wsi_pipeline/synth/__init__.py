"""Synthetic liquid-based Pap-smear slides ("synthpap") with ground truth.

Pipeline: :mod:`.style` draws a slide's appearance, :mod:`.scene` places cells (geometry and
ground truth), :mod:`.cells` renders one cell to optical density, :mod:`.render` composites bands
of the slide, :mod:`.writer` streams them into a pyramidal JPEG TIFF, :mod:`.dataset` runs it all
for a set of slides.
"""

GENERATOR_VERSION = 1  # bump when a seed no longer reproduces the same pixels or labels

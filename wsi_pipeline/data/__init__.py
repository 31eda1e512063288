"""Annotation formats (QuPath GeoJSON, COCO) and labeled patch planning."""

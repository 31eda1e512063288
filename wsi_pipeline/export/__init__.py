"""What the pipeline hands to people and other tools: QuPath GeoJSON of detections, slide reports."""

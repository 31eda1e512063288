"""Reading slides (level-0 coordinates, explicit resolution)."""

"""The closet: the garment format, the starter garments the project draws, the garment store."""

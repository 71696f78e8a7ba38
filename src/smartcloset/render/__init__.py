"""Rendering: garments skinned onto the body (mesh), warped (warp) and alpha-composited."""

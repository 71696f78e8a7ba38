"""Pose estimation: backends, the batching worker and the per-client keypoint timeline."""

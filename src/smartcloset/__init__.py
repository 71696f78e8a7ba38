"""Smart Closet: a real-time virtual try-on mirror.

One frame's path, socket to socket:
``stream.protocol`` (parse) -> ``stream.slot`` (newest frame wins) -> ``pose.worker``
(batch, downscale, ``pose.backend``) -> ``pose.timeline`` (keypoints at the frame's own
capture time) -> ``render`` (garment warp + composite) -> ``codec`` (JPEG) -> socket.
``server.session`` is where those stages are wired together for one client.
"""

__version__ = "0.1.0"

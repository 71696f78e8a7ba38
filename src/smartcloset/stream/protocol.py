"""The wire protocol (see docs/protocol.md): binary frames with a small header, JSON control.

Every binary message starts with the same 8 bytes: magic ``b"SC"``, a version byte, a type
byte and a uint32 frame id, little-endian. Timestamps are float64 milliseconds: the client's
capture time on the client's own clock, the server's on its Unix-epoch clock.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

MAGIC = b"SC"
VERSION = 1
TYPE_FRAME = 1  # client -> server: a camera frame
TYPE_RENDERED = 2  # server -> client: the rendered frame

# magic, version, type, frame_id, capture_ts_ms
FRAME_HEADER = struct.Struct("<2sBBId")
# ... + received_ms, pose_ms, sent_ms, pose_source, persons, reserved
REPLY_HEADER = struct.Struct("<2sBBIddddBBH")

#: How the keypoints of a rendered frame were obtained (``pose_source`` in the reply header).
POSE_SOURCES = ("none", "own", "interpolated", "extrapolated", "held")

MAX_CONTROL_BYTES = 16 * 1024
MAX_GARMENTS_SELECTED = 8


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``code`` is sent back to the client in the error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ClientFrame:
    frame_id: int
    capture_ms: float
    jpeg: bytes
    received_ms: float = 0.0  # server clock, set on arrival


def pack_frame(frame_id: int, capture_ms: float, jpeg: bytes) -> bytes:
    return FRAME_HEADER.pack(MAGIC, VERSION, TYPE_FRAME, frame_id & 0xFFFFFFFF, capture_ms) + jpeg


def parse_frame(data: bytes, received_ms: float = 0.0) -> ClientFrame:
    if len(data) < FRAME_HEADER.size:
        raise ProtocolError(
            "bad_header",
            f"binary message of {len(data)} bytes is shorter than the {FRAME_HEADER.size}-byte frame header",
        )
    magic, version, mtype, frame_id, capture_ms = FRAME_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("bad_header", f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError("bad_version", f"protocol version {version} is not supported (server speaks {VERSION})")
    if mtype != TYPE_FRAME:
        raise ProtocolError("bad_type", f"binary message type {mtype} is not a frame ({TYPE_FRAME})")
    if not math.isfinite(capture_ms):
        raise ProtocolError("bad_header", "capture timestamp is not a finite number")
    jpeg = bytes(memoryview(data)[FRAME_HEADER.size :])
    if not jpeg:
        raise ProtocolError("empty_frame", f"frame {frame_id} carries no image bytes")
    return ClientFrame(frame_id, capture_ms, jpeg, received_ms)


@dataclass
class ReplyHeader:
    frame_id: int
    capture_ms: float
    received_ms: float
    pose_ms: float  # when the pose used for this frame was done (NaN: no pose)
    sent_ms: float
    pose_source: str = "none"
    persons: int = 0


def pack_reply(h: ReplyHeader, jpeg: bytes) -> bytes:
    return (
        REPLY_HEADER.pack(
            MAGIC,
            VERSION,
            TYPE_RENDERED,
            h.frame_id & 0xFFFFFFFF,
            h.capture_ms,
            h.received_ms,
            h.pose_ms,
            h.sent_ms,
            POSE_SOURCES.index(h.pose_source),
            min(h.persons, 255),
            0,
        )
        + jpeg
    )


def parse_reply(data: bytes) -> tuple[ReplyHeader, bytes]:
    if len(data) < REPLY_HEADER.size:
        raise ProtocolError("bad_header", f"reply of {len(data)} bytes is shorter than its header")
    magic, version, mtype, fid, cap, rec, pose, sent, src, persons, _ = REPLY_HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or mtype != TYPE_RENDERED:
        raise ProtocolError("bad_header", "not a rendered-frame reply")
    if src >= len(POSE_SOURCES):
        raise ProtocolError("bad_header", f"unknown pose source {src}")
    return ReplyHeader(fid, cap, rec, pose, sent, POSE_SOURCES[src], persons), bytes(data[REPLY_HEADER.size :])


# -- control messages (JSON text frames) --------------------------------------------------


@dataclass
class SelectGarments:
    """``{"type": "select", "garments": ["tshirt-white", ...]}``: what to wear, bottom layer first."""

    garments: list[str] = field(default_factory=list)


@dataclass
class Settings:
    """``{"type": "settings", ...}``: per-client options; absent keys keep their value."""

    jpeg_quality: int | None = None
    draw_skeleton: bool | None = None
    pose_wait_ms: float | None = None


@dataclass
class Ping:
    """``{"type": "ping", "t": <client ms>}``: answered with ``pong`` carrying the same ``t``."""

    t: float = 0.0


ControlMessage = SelectGarments | Settings | Ping

_SETTINGS_RANGES = {"jpeg_quality": (30, 100), "pose_wait_ms": (0.0, 200.0)}


def _check_keys(obj: dict, allowed: set[str]) -> None:
    extra = set(obj) - allowed - {"type"}
    if extra:
        raise ProtocolError("bad_control", f"unknown field(s) {sorted(extra)} in {obj['type']!r} message")


def parse_control(text: str) -> ControlMessage:
    """Validate one JSON control message; raises ProtocolError with a message for the client."""
    if len(text) > MAX_CONTROL_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_CONTROL_BYTES:
        raise ProtocolError("control_too_large", f"control message is over {MAX_CONTROL_BYTES} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also an int of over 4300 digits
        raise ProtocolError("bad_json", f"control message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_control", 'control message must be a JSON object with a string "type"')
    kind = obj["type"]
    if kind == "select":
        _check_keys(obj, {"garments"})
        ids = obj.get("garments")
        if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
            raise ProtocolError("bad_control", '"garments" must be a list of garment id strings')
        if len(ids) > MAX_GARMENTS_SELECTED:
            raise ProtocolError("bad_control", f"at most {MAX_GARMENTS_SELECTED} garments can be worn at once")
        return SelectGarments(list(dict.fromkeys(ids)))
    if kind == "settings":
        _check_keys(obj, {"jpeg_quality", "draw_skeleton", "pose_wait_ms"})
        s = Settings()
        for key, (lo, hi) in _SETTINGS_RANGES.items():
            if key in obj:
                v = obj[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
                    raise ProtocolError("bad_control", f'"{key}" must be a number in [{lo}, {hi}]')
                setattr(s, key, int(v) if key == "jpeg_quality" else float(v))
        if "draw_skeleton" in obj:
            if not isinstance(obj["draw_skeleton"], bool):
                raise ProtocolError("bad_control", '"draw_skeleton" must be true or false')
            s.draw_skeleton = obj["draw_skeleton"]
        return s
    if kind == "ping":
        _check_keys(obj, {"t"})
        t = obj.get("t", 0.0)
        try:
            t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else math.nan
        except OverflowError:  # an int too big for a float
            t = math.nan
        if not math.isfinite(t):
            raise ProtocolError("bad_control", '"t" must be a finite number')
        return Ping(t)
    raise ProtocolError("unknown_type", f"unknown control message type {kind[:64]!r}")

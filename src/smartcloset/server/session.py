"""One client's WebSocket session: a frame's whole path from socket to socket.

Two threads per client:

* the **receiver** (the connection's handler thread) parses each message and never waits on
  the pipeline: a frame goes into this session's newest-frame slot (for rendering) and into
  the pose worker's slot for this client (for posing); an older frame still waiting in either
  is replaced and counted as dropped;
* the **renderer/sender** takes the newest frame, decodes it, asks the keypoint timeline for
  the keypoints at the frame's own capture time, draws the look, encodes and sends it - and
  sends every text message too, so only one thread ever writes to the socket. It sends one
  frame at a time, so a slow reader holds at most one outgoing frame and gets fewer frames.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque

from simple_websocket import ConnectionClosed

from .. import codec, metrics
from ..closet.garment import draw_order
from ..codec import ImageError
from ..engine import Rendered
from ..pose.timeline import KeypointTimeline, TimedKeypoints
from ..render.annotators import LookAnnotator, SkeletonAnnotator, render_frame
from ..stats import RateMeter, Rolling, now_ms
from ..stream.protocol import (
    ClientFrame,
    Ping,
    ProtocolError,
    ReplyHeader,
    SelectGarments,
    Settings,
    pack_reply,
    parse_control,
    parse_frame,
)
from ..stream.slot import InOrder, NewestSlot, SlotClosed
from ..stream.transport import FrameSender, bound_inbox
from .pipeline import Pipeline

log = logging.getLogger(__name__)

INBOX_LIMIT = 8  # messages simple-websocket may hold for us before the oldest is dropped
MAX_TEXTS = 32  # outgoing text messages waiting for the sender


class SessionLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[{self.extra['conn']}] {msg}", kwargs


class Session:
    def __init__(self, ws, pipeline: Pipeline, remote: str = "?") -> None:
        self.id = uuid.uuid4().hex[:8]
        self.log = SessionLog(log, {"conn": self.id})
        self.ws = ws
        self.pipeline = pipeline
        self.remote = remote
        cfg = pipeline.config
        self.timeline = KeypointTimeline()
        self._cond = threading.Condition()
        self.frames: NewestSlot[ClientFrame] = NewestSlot(self._cond)
        # The batched frame path (GPU) renders for us and leaves the reply here (newest wins).
        self.batched = pipeline.batched
        self.replies: NewestSlot[Rendered] = NewestSlot(self._cond)
        self._order = InOrder()  # replies that come back after a newer one are dropped
        self._texts: deque[str] = deque(maxlen=MAX_TEXTS)
        self._closing: tuple[int, str] | None = None
        self.sender = FrameSender(ws, cfg.send_timeout_s)
        self.inbox = bound_inbox(ws, INBOX_LIMIT)
        self.look = [g for g in cfg.default_garments if g in pipeline.closet]
        self.jpeg_quality = cfg.jpeg_quality
        self.pose_wait_ms = cfg.pose_wait_ms
        self.draw_skeleton = False
        self.received = 0
        self.sent = 0
        self.errors = 0
        self.send_rate = RateMeter()
        self.latency_ms = Rolling(256)
        self.stage_ms = {k: Rolling(256) for k in ("decode", "render", "encode")}

    # -- receiver (handler thread) --------------------------------------------------------
    def run(self) -> None:
        worker = self.pipeline.worker
        if self.batched:
            worker.register(self.id, self.timeline, sink=self)
        else:
            worker.register(self.id, self.timeline)
        self.pipeline.sessions.add(self)
        metrics.ACTIVE_CLIENTS.inc()
        sender = threading.Thread(target=self._send_loop, name=f"session-{self.id}", daemon=True)
        sender.start()
        self.log.info("connected from %s", self.remote)
        self.queue_json(
            {
                "type": "hello",
                "session": self.id,
                "look": self.look,
                "backend": worker.backend.name,
                "device": worker.backend.device,
                "limits": {"max_frame_bytes": self.pipeline.config.max_frame_bytes},
            }
        )
        reported_text_drops = 0
        try:
            while self._closing is None:
                msg = self.ws.receive(timeout=1.0)
                if self.inbox.dropped_text > reported_text_drops:
                    reported_text_drops = self.inbox.dropped_text
                    self.error(
                        "too_many_messages",
                        f"control messages arrive faster than they are read; {reported_text_drops} dropped",
                    )
                if msg is None:
                    if not self.ws.connected:
                        break
                    continue
                if isinstance(msg, (bytes, bytearray)):
                    self._on_frame(msg)
                else:
                    self._on_text(msg)
        except ConnectionClosed:
            pass
        finally:
            dropped = self.dropped
            self.frames.close()  # wakes the sender, which exits
            self.replies.close()
            worker.unregister(self.id)
            self.pipeline.sessions.discard(self)
            sender.join(2.0)
            if sender.is_alive():  # blocked in sendall on a reader that stopped reading
                self._abort_socket()
                sender.join(2.0)
            metrics.ACTIVE_CLIENTS.dec()
            self.log.info(
                "closed: received=%d sent=%d dropped=%d errors=%d", self.received, self.sent, dropped, self.errors
            )

    def _on_frame(self, data: bytes) -> None:
        self.received += 1
        metrics.FRAMES_RECEIVED.inc()
        try:
            frame = parse_frame(data, now_ms())
            codec.jpeg_size(frame.jpeg, self.pipeline.limits)  # header only: cheap, catches most bad input
        except (ProtocolError, ImageError) as exc:
            fid = int.from_bytes(data[4:8], "little") if len(data) >= 8 else None
            self.error(exc.code, str(exc), fid)
            return
        if self.batched:  # the engine's slot is the only queue: decode to send happen there
            self.pipeline.worker.submit(self.id, frame)
            return
        try:
            if self.frames.put(frame) is not None:
                metrics.FRAMES_DROPPED.labels("render").inc()
        except SlotClosed:
            return
        if not self.pipeline.config.transport_only:
            self.pipeline.worker.submit(self.id, frame)

    def _on_text(self, text: str) -> None:
        try:
            msg = parse_control(text)
        except ProtocolError as exc:
            self.error(exc.code, str(exc))
            return
        if isinstance(msg, SelectGarments):
            missing = [g for g in msg.garments if g not in self.pipeline.closet]
            if missing:
                self.error("unknown_garment", f"no garment(s) {', '.join(missing)} in the closet")
                return
            # Bottom layer first (tucked tops under the bottoms), each drawn over the ones below.
            self.look = [g.id for g in draw_order([self.pipeline.closet.get(g) for g in msg.garments])]
            self.queue_json({"type": "look", "garments": self.look})
        elif isinstance(msg, Settings):
            if msg.jpeg_quality is not None:
                self.jpeg_quality = msg.jpeg_quality
            if msg.pose_wait_ms is not None:
                self.pose_wait_ms = msg.pose_wait_ms
            if msg.draw_skeleton is not None:
                self.draw_skeleton = msg.draw_skeleton
            self.queue_json(
                {
                    "type": "settings",
                    "jpeg_quality": self.jpeg_quality,
                    "pose_wait_ms": self.pose_wait_ms,
                    "draw_skeleton": self.draw_skeleton,
                }
            )
        elif isinstance(msg, Ping):
            self.queue_json({"type": "pong", "t": msg.t, "server_ms": now_ms()})

    def error(self, code: str, message: str, frame_id: int | None = None) -> None:
        """Tell the client what was wrong; the stream goes on unless errors keep coming."""
        self.errors += 1
        metrics.FRAME_ERRORS.labels(code).inc()
        self.log.info("client error %s: %s", code, message)
        payload = {"type": "error", "code": code, "message": message}
        if frame_id is not None:
            payload["frame_id"] = frame_id
        self.queue_json(payload)
        if self.errors >= self.pipeline.config.max_errors:
            self.close(1008, f"too many bad messages ({self.errors})")

    def queue_json(self, payload: dict) -> None:
        with self._cond:
            self._texts.append(json.dumps(payload, separators=(",", ":")))
            self._cond.notify_all()

    def close(self, code: int, reason: str) -> None:
        with self._cond:
            self._closing = (code, reason)
            self._cond.notify_all()

    def shutdown(self, reason: str = "server shutting down") -> None:
        """Close from outside (server stop): say why, then make sure the socket is gone."""
        self.close(1001, reason)
        threading.Timer(1.0, self._abort_socket).start()

    def _abort_socket(self) -> None:
        import socket

        try:
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- renderer / sender thread -----------------------------------------------------------
    def _next(self, timeout: float) -> tuple[list[str], ClientFrame | Rendered | None, bool]:
        slot = self.replies if self.batched else self.frames
        with self._cond:
            if not self._texts and slot.peek() is None and not self.frames.closed and self._closing is None:
                self._cond.wait(timeout)
            texts = list(self._texts)
            self._texts.clear()
            return texts, slot.take(), self.frames.closed or self._closing is not None

    def _send_loop(self) -> None:
        next_stats = time.monotonic() + self.pipeline.config.stats_interval_s
        pose_health = ("ok", "")  # what this client was last told about the pose model
        try:
            while True:
                texts, frame, stopping = self._next(0.25)
                for text in texts:
                    self.sender.send(text)
                health = self.pipeline.worker.health()
                if health != pose_health:  # pose down or back: frames go on, say why they are bare
                    pose_health = health
                    self.sender.send(json.dumps({"type": "status", "pose": health[0], "message": health[1]}))
                if isinstance(frame, Rendered):
                    self._send_reply(frame.frame, frame.jpeg, frame.pose)
                elif frame is not None:
                    self._render_and_send(frame)
                if time.monotonic() >= next_stats:
                    self.sender.send(json.dumps(self.stats()))
                    next_stats = time.monotonic() + self.pipeline.config.stats_interval_s
                if stopping:
                    if self._closing is not None:
                        self.ws.close(*self._closing)
                    return
        except ConnectionClosed:
            return
        except Exception:
            self.log.exception("sender failed")
            self._abort_socket()

    # -- the batched path's side: the engine calls these from its threads -------------------------
    def render_look(self) -> list:
        """This client's garments' renderers, bottom layer first."""
        try:
            return [self.pipeline.annotator(g) for g in self.look]
        except KeyError:  # a garment left the closet: drop it from the look
            self.look = [g for g in self.look if g in self.pipeline.closet]
            return [self.pipeline.annotator(g) for g in self.look]

    def deliver(self, rendered: Rendered) -> None:
        """A rendered frame from the engine; one that comes back after a newer one is dropped
        and counted as late (``InOrder``)."""
        with self._cond:
            if not self._order.admit(rendered.frame.received_ms):
                metrics.FRAMES_DROPPED.labels("late").inc()
                return
        try:
            if self.replies.put(rendered) is not None:  # the sender is behind: newest wins
                metrics.FRAMES_DROPPED.labels("send").inc()
        except SlotClosed:
            pass

    def frame_error(self, frame: ClientFrame, error: ImageError) -> None:
        self.error(error.code, str(error), frame.frame_id)

    def _render_and_send(self, frame: ClientFrame) -> None:
        if self.pipeline.config.transport_only:  # measuring the transport alone: echo the JPEG
            self._send_reply(frame, frame.jpeg, TimedKeypoints(None, "none"))
            return
        t0 = time.perf_counter()
        try:
            image = codec.decode(frame.jpeg, "BGR", self.pipeline.limits)
        except ImageError as exc:
            self.error(exc.code, str(exc), frame.frame_id)
            return
        t1 = time.perf_counter()
        if self.pose_wait_ms > 0:
            self.timeline.wait_for(frame.capture_ms, self.pose_wait_ms / 1000.0)
        pose = self.timeline.smoothed(frame.capture_ms)
        look: list = [LookAnnotator(self.render_look())]
        if self.draw_skeleton:
            look.append(SkeletonAnnotator())
        image = render_frame(image, pose, look)
        t2 = time.perf_counter()
        jpeg = codec.encode(image, self.jpeg_quality)
        t3 = time.perf_counter()
        for key, dt in (("decode", t1 - t0), ("render", t2 - t1), ("encode", t3 - t2)):
            self.stage_ms[key].add(dt * 1000.0)
            metrics.STAGE_MS.labels(key).observe(dt * 1000.0)
        self._send_reply(frame, jpeg, pose)

    def _send_reply(self, frame: ClientFrame, jpeg: bytes, pose: TimedKeypoints) -> None:
        sent_ms = now_ms()
        header = ReplyHeader(
            frame.frame_id, frame.capture_ms, frame.received_ms, pose.pose_done_ms, sent_ms, pose.source, pose.persons
        )
        self.sender.send(pack_reply(header, jpeg))
        self.sent += 1
        self.send_rate.tick()
        latency = sent_ms - frame.received_ms
        self.latency_ms.add(latency)
        metrics.LATENCY_MS.observe(latency)
        metrics.FRAMES_SENT.inc()

    @property
    def dropped(self) -> int:
        """Frames replaced by newer ones before they were drawn or sent, wherever that happened."""
        return sum(self.dropped_at().values())

    def dropped_at(self) -> dict[str, int]:
        """Where frames were dropped: the socket's inbox, the render slot (per-session path) or
        the engine (batched: its slot, and with engine processes the links to and from it), and
        the reply slot before the sender took them."""
        at = {"inbox": self.inbox.dropped, "replies": self.replies.dropped}
        if self.batched:
            at["engine"] = self.pipeline.worker.dropped(self.id)
            at["late"] = self._order.late
        else:
            at["render"] = self.frames.dropped
        return at

    def stats(self) -> dict:
        worker = self.pipeline.worker.snapshot()
        at = self.dropped_at()  # read once: the total is the sum of the parts sent
        return {
            "type": "stats",
            "received": self.received,
            "sent": self.sent,
            "dropped": sum(at.values()),
            "dropped_at": at,
            "errors": self.errors,
            "output_fps": round(self.send_rate.rate(), 2),
            "latency_ms_p50": self.latency_ms.median(),
            "stage_ms": worker.get("stage_ms_p50") or {k: v.median() for k, v in self.stage_ms.items()},
            "pose_fps": worker["pose_fps"],
            "mean_batch_size": worker["mean_batch_size"],
            "clients": worker["clients"],
            "backend": worker["backend"],
            "device": worker["device"],
        }

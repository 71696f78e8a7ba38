// The wire protocol, version 1 (docs/protocol.md). Little-endian; timestamps in ms.

export const FRAME_HEADER_BYTES = 16;
export const REPLY_HEADER_BYTES = 44;
const MAGIC0 = 0x53; // "S"
const MAGIC1 = 0x43; // "C"
const VERSION = 1;
const TYPE_FRAME = 1;
const TYPE_RENDERED = 2;

export const POSE_SOURCES = ["none", "own", "interpolated", "extrapolated", "held"] as const;
export type PoseSource = (typeof POSE_SOURCES)[number];

export interface ReplyHeader {
  frameId: number;
  captureMs: number; // client clock, as sent
  receivedMs: number; // server clock
  poseMs: number; // server clock; NaN when no pose was used
  sentMs: number; // server clock
  poseSource: PoseSource;
  persons: number;
}

/** Writes the 16-byte frame header into the start of `buf` (the JPEG follows it). */
export function writeFrameHeader(buf: ArrayBuffer, frameId: number, captureMs: number): void {
  const v = new DataView(buf);
  v.setUint8(0, MAGIC0);
  v.setUint8(1, MAGIC1);
  v.setUint8(2, VERSION);
  v.setUint8(3, TYPE_FRAME);
  v.setUint32(4, frameId >>> 0, true);
  v.setFloat64(8, captureMs, true);
}

/** Header + JPEG in one ArrayBuffer: one WebSocket message, sent as an ArrayBuffer (not a Blob). */
export function packFrame(frameId: number, captureMs: number, jpeg: ArrayBuffer): ArrayBuffer {
  const out = new Uint8Array(FRAME_HEADER_BYTES + jpeg.byteLength);
  out.set(new Uint8Array(jpeg), FRAME_HEADER_BYTES);
  writeFrameHeader(out.buffer, frameId, captureMs);
  return out.buffer;
}

export class ProtocolError extends Error {}

export function parseReply(buf: ArrayBuffer): { header: ReplyHeader; jpeg: Uint8Array } {
  if (buf.byteLength < REPLY_HEADER_BYTES) throw new ProtocolError(`reply of ${buf.byteLength} bytes is too short`);
  const v = new DataView(buf);
  if (v.getUint8(0) !== MAGIC0 || v.getUint8(1) !== MAGIC1 || v.getUint8(2) !== VERSION || v.getUint8(3) !== TYPE_RENDERED) {
    throw new ProtocolError("not a rendered-frame reply");
  }
  const source = v.getUint8(40);
  if (source >= POSE_SOURCES.length) throw new ProtocolError(`unknown pose source ${source}`);
  return {
    header: {
      frameId: v.getUint32(4, true),
      captureMs: v.getFloat64(8, true),
      receivedMs: v.getFloat64(16, true),
      poseMs: v.getFloat64(24, true),
      sentMs: v.getFloat64(32, true),
      poseSource: POSE_SOURCES[source],
      persons: v.getUint8(41),
    },
    jpeg: new Uint8Array(buf, REPLY_HEADER_BYTES),
  };
}

// -- JSON messages ------------------------------------------------------------------------

export interface ServerStats {
  type: "stats";
  received: number;
  sent: number;
  dropped: number;
  errors: number;
  output_fps: number;
  latency_ms_p50: number | null;
  stage_ms: Record<string, number | null>;
  pose_fps: number;
  mean_batch_size: number | null;
  clients: number;
  backend: string;
  device: string;
}

export type ServerMessage =
  | { type: "hello"; session: string; look: string[]; backend: string; device: string }
  | { type: "error"; code: string; message: string; frame_id?: number }
  | { type: "look"; garments: string[] }
  | { type: "pong"; t: number; server_ms: number }
  | { type: "settings"; jpeg_quality: number; pose_wait_ms: number; draw_skeleton: boolean }
  | ServerStats;

export function selectMessage(garments: string[]): string {
  return JSON.stringify({ type: "select", garments });
}

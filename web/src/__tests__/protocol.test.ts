import { describe, expect, it } from "vitest";

import { FRAME_HEADER_BYTES, packFrame, parseReply, ProtocolError, REPLY_HEADER_BYTES } from "../protocol";

function reply(frameId: number, source: number): ArrayBuffer {
  const buf = new ArrayBuffer(REPLY_HEADER_BYTES + 3);
  const v = new DataView(buf);
  v.setUint8(0, 0x53);
  v.setUint8(1, 0x43);
  v.setUint8(2, 1);
  v.setUint8(3, 2);
  v.setUint32(4, frameId, true);
  v.setFloat64(8, 100.5, true);
  v.setFloat64(16, 1000, true);
  v.setFloat64(24, NaN, true);
  v.setFloat64(32, 1012.5, true);
  v.setUint8(40, source);
  v.setUint8(41, 1);
  new Uint8Array(buf).set([1, 2, 3], REPLY_HEADER_BYTES);
  return buf;
}

describe("protocol", () => {
  it("packs a frame as the server expects: magic, version, type, id, capture time, JPEG", () => {
    const jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0xe0]).buffer;
    const msg = packFrame(0x01020304, 1234.5, jpeg);
    const v = new DataView(msg);
    expect(msg.byteLength).toBe(FRAME_HEADER_BYTES + 4);
    expect([v.getUint8(0), v.getUint8(1), v.getUint8(2), v.getUint8(3)]).toEqual([0x53, 0x43, 1, 1]);
    expect(v.getUint32(4, true)).toBe(0x01020304);
    expect(v.getFloat64(8, true)).toBe(1234.5);
    expect(Array.from(new Uint8Array(msg, FRAME_HEADER_BYTES))).toEqual([0xff, 0xd8, 0xff, 0xe0]);
  });

  it("parses a rendered-frame reply", () => {
    const { header, jpeg } = parseReply(reply(7, 3));
    expect(header).toMatchObject({ frameId: 7, captureMs: 100.5, receivedMs: 1000, sentMs: 1012.5, poseSource: "extrapolated", persons: 1 });
    expect(Number.isNaN(header.poseMs)).toBe(true);
    expect(Array.from(jpeg)).toEqual([1, 2, 3]);
  });

  it("refuses what is not a reply", () => {
    expect(() => parseReply(new ArrayBuffer(10))).toThrow(ProtocolError);
    const bad = reply(1, 9);
    expect(() => parseReply(bad)).toThrow(/pose source/);
    const wrongType = reply(1, 1);
    new DataView(wrongType).setUint8(3, 1);
    expect(() => parseReply(wrongType)).toThrow(ProtocolError);
  });
});

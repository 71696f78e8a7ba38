import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { backoffDelay, type ConnectionStatus, MirrorConnection, refusalOf } from "../connection";
import { REPLY_HEADER_BYTES } from "../protocol";

class FakeSocket {
  static all: FakeSocket[] = [];
  readyState = 0;
  bufferedAmount = 0;
  binaryType: BinaryType = "blob";
  sent: Array<ArrayBuffer | string> = [];
  onopen: ((ev: Event) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  constructor(public url: string) {
    FakeSocket.all.push(this);
  }
  send(data: ArrayBuffer | string) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
    this.onclose?.({} as CloseEvent);
  }
  open() {
    this.readyState = 1;
    this.onopen?.({} as Event);
  }
  drop() {
    this.readyState = 3;
    this.onclose?.({} as CloseEvent);
  }
  refuse(code: number, reason: string) {
    this.readyState = 3;
    this.onclose?.({ code, reason } as CloseEvent);
  }
  reply(frameId: number, captureMs: number) {
    const buf = new ArrayBuffer(REPLY_HEADER_BYTES + 1);
    const v = new DataView(buf);
    [0x53, 0x43, 1, 2].forEach((b, i) => v.setUint8(i, b));
    v.setUint32(4, frameId, true);
    v.setFloat64(8, captureMs, true);
    v.setFloat64(16, 10, true);
    v.setFloat64(32, 25, true);
    this.onmessage?.({ data: buf } as MessageEvent);
  }
}

const jpeg = new Uint8Array([0xff, 0xd8, 0xff]).buffer;

function setup(now = { t: 0 }) {
  const statuses: Array<[ConnectionStatus, number | undefined]> = [];
  const frames: number[] = [];
  const conn = new MirrorConnection(
    "ws://x/ws",
    { onStatus: (s, r) => statuses.push([s, r]), onFrame: (h) => frames.push(h.frameId), onMessage: () => undefined },
    { maxInFlight: 2, maxBufferedBytes: 1000, backoffInitialMs: 500, backoffMaxMs: 8000, inFlightTimeoutMs: 1500 },
    (u) => new FakeSocket(u),
    () => now.t,
  );
  return { conn, statuses, frames, socket: FakeSocket.all[FakeSocket.all.length - 1], now };
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.stubGlobal("WebSocket", { OPEN: 1 });
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("MirrorConnection", () => {
  it("keeps at most maxInFlight frames unanswered", () => {
    const { conn, socket } = setup();
    expect(conn.canSend()).toBe(false); // not open yet
    socket.open();
    expect(socket.binaryType).toBe("arraybuffer");
    expect(conn.canSend()).toBe(true);
    conn.sendFrame(1, 0, jpeg);
    conn.sendFrame(2, 0, jpeg);
    expect(conn.canSend()).toBe(false);
    socket.reply(2, 0); // the server answers in order and dropped frame 1: both are done
    expect(conn.framesInFlight).toBe(0);
    expect(conn.canSend()).toBe(true);
  });

  it("sends nothing while the socket buffers", () => {
    const { conn, socket } = setup();
    socket.open();
    socket.bufferedAmount = 5000;
    expect(conn.canSend()).toBe(false);
    socket.bufferedAmount = 0;
    expect(conn.canSend()).toBe(true);
  });

  it("forgets frames the server never answered after a timeout", () => {
    const { conn, socket, now } = setup();
    socket.open();
    conn.sendFrame(1, 0, jpeg);
    conn.sendFrame(2, 0, jpeg);
    expect(conn.canSend()).toBe(false);
    now.t = 2000;
    expect(conn.canSend()).toBe(true);
  });

  it("measures round trip on the capture clock and server latency from the header", () => {
    const { conn, socket, now, frames } = setup();
    socket.open();
    conn.sendFrame(5, 100, jpeg);
    now.t = 160;
    socket.reply(5, 100);
    expect(frames).toEqual([5]);
    expect(conn.roundTrip.percentile(50)).toBe(60);
    expect(conn.serverLatency.percentile(50)).toBe(15);
  });

  it("reconnects with growing backoff and resets after a success", () => {
    const { statuses, socket } = setup();
    socket.drop();
    expect(statuses.at(-1)?.[0]).toBe("closed");
    const first = statuses.at(-1)![1]!;
    vi.advanceTimersByTime(first);
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.all[1].drop();
    const second = statuses.at(-1)![1]!;
    expect(second).toBeGreaterThan(first);
    vi.advanceTimersByTime(second);
    FakeSocket.all[2].open();
    expect(statuses.at(-1)?.[0]).toBe("open");
    FakeSocket.all[2].drop();
    expect(statuses.at(-1)![1]!).toBeLessThanOrEqual(first * 1.5);
  });

  it("passes the server's refusal reason on, and retries later", () => {
    const refusals: Array<string | undefined> = [];
    new MirrorConnection(
      "ws://x/ws",
      { onStatus: (_s, _r, why) => refusals.push(why), onFrame: () => undefined, onMessage: () => undefined },
      {},
      (u) => new FakeSocket(u),
    );
    FakeSocket.all.at(-1)!.refuse(1013, "server full: 32 clients connected, try again later");
    expect(refusals.at(-1)).toBe("server full: 32 clients connected, try again later");
    vi.advanceTimersByTime(10_000);
    FakeSocket.all.at(-1)!.drop(); // a plain drop (1006, no reason) is "unreachable", not a refusal
    expect(refusals.at(-1)).toBeUndefined();
  });

  it("stops reconnecting once closed by the page", () => {
    const { conn } = setup();
    conn.close();
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
  });
});

describe("backoffDelay", () => {
  it("doubles up to the cap, with jitter around it", () => {
    const mid = () => 0.5;
    expect([0, 1, 2, 3, 10].map((a) => backoffDelay(a, 500, 8000, mid))).toEqual([500, 1000, 2000, 4000, 8000]);
    expect(backoffDelay(0, 500, 8000, () => 0)).toBe(375);
    expect(backoffDelay(0, 500, 8000, () => 1)).toBe(625);
  });
});

describe("refusalOf", () => {
  it("reads the reason only for the server's refusal codes", () => {
    expect(refusalOf({ code: 1008, reason: "too many bad messages (50)" })).toBe("too many bad messages (50)");
    expect(refusalOf({ code: 1013, reason: "" })).toBeUndefined();
    expect(refusalOf({ code: 1000, reason: "bye" })).toBeUndefined();
    expect(refusalOf({ code: 1006, reason: "" })).toBeUndefined();
    expect(refusalOf(undefined)).toBeUndefined();
  });
});

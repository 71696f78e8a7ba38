// The WebSocket to the server: reconnects with backoff, keeps at most `maxInFlight` frames
// unanswered and sends nothing while the socket buffers, so the page never queues frames.

import { packFrame, parseReply, type ReplyHeader, type ServerMessage } from "./protocol";
import { RateWindow, Samples } from "./stats";

export type ConnectionStatus = "connecting" | "open" | "closed";

export interface ConnectionEvents {
  /** `refusal`: why the server closed or refused the socket, when it said (limits, policy). */
  onStatus(status: ConnectionStatus, retryInMs?: number, refusal?: string): void;
  onFrame(header: ReplyHeader, jpeg: Uint8Array): void;
  onMessage(message: ServerMessage): void;
}

export interface ConnectionOptions {
  maxInFlight: number;
  maxBufferedBytes: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  inFlightTimeoutMs: number;
}

export const DEFAULT_OPTIONS: ConnectionOptions = {
  maxInFlight: 2,
  maxBufferedBytes: 512 * 1024,
  backoffInitialMs: 500,
  backoffMaxMs: 8000,
  inFlightTimeoutMs: 1500,
};

type SocketLike = Pick<WebSocket, "send" | "close" | "readyState" | "bufferedAmount" | "binaryType"> & {
  onopen: ((ev: Event) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
};

export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** attempt);
  return Math.round(base * (0.75 + 0.5 * random())); // jitter: mirrors restarting together do not stampede
}

/** The server's reason for closing, for the codes it uses to refuse or end a session
 *  (1008 policy, 1009 too big, 1011 server error, 1013 full: try again later). */
export function refusalOf(ev: Pick<CloseEvent, "code" | "reason"> | undefined): string | undefined {
  if (!ev || ![1008, 1009, 1011, 1013].includes(ev.code)) return undefined;
  return ev.reason || undefined;
}

export class MirrorConnection {
  readonly sendRate = new RateWindow();
  readonly receiveRate = new RateWindow();
  readonly roundTrip = new Samples();
  readonly serverLatency = new Samples();
  private socket: SocketLike | null = null;
  private inFlight = new Map<number, number>(); // frame id -> sent at (ms)
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private readonly options: ConnectionOptions;

  constructor(
    private readonly url: string,
    private readonly events: ConnectionEvents,
    options: Partial<ConnectionOptions> = {},
    private readonly createSocket: (url: string) => SocketLike = (u) => new WebSocket(u),
    private readonly now: () => number = () => performance.now(),
  ) {
    this.options = { ...DEFAULT_OPTIONS, ...options };
    this.open();
  }

  setMaxInFlight(n: number): void {
    this.options.maxInFlight = Math.max(1, Math.min(8, Math.round(n)));
  }

  get isOpen(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  get framesInFlight(): number {
    return this.inFlight.size;
  }

  /** True when a new frame may be sent now; otherwise the capture loop skips this frame. */
  canSend(): boolean {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    const now = this.now();
    for (const [id, sentAt] of this.inFlight) {
      if (now - sentAt > this.options.inFlightTimeoutMs) this.inFlight.delete(id); // dropped by the server
    }
    return this.inFlight.size < this.options.maxInFlight && this.socket.bufferedAmount < this.options.maxBufferedBytes;
  }

  /** Sends a packed frame (header + JPEG); returns false if the socket is not open. */
  sendPacked(frameId: number, message: ArrayBuffer): boolean {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(message);
    const now = this.now();
    this.inFlight.set(frameId, now);
    this.sendRate.tick(now);
    return true;
  }

  sendFrame(frameId: number, captureMs: number, jpeg: ArrayBuffer): boolean {
    return this.sendPacked(frameId, packFrame(frameId, captureMs, jpeg));
  }

  sendText(text: string): boolean {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(text);
    return true;
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.socket?.close();
  }

  private open(): void {
    this.events.onStatus("connecting");
    const socket = this.createSocket(this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.inFlight.clear();
      this.events.onStatus("open");
    };
    socket.onmessage = (ev: MessageEvent) => this.handle(ev.data);
    socket.onclose = (ev: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.inFlight.clear();
      if (this.closed) return;
      const delay = backoffDelay(this.attempt++, this.options.backoffInitialMs, this.options.backoffMaxMs);
      this.events.onStatus("closed", delay, refusalOf(ev));
      this.retryTimer = setTimeout(() => this.open(), delay);
    };
    socket.onerror = () => undefined; // onclose follows and schedules the retry
  }

  private handle(data: unknown): void {
    if (typeof data === "string") {
      try {
        this.events.onMessage(JSON.parse(data) as ServerMessage);
      } catch {
        /* not JSON: ignore */
      }
      return;
    }
    if (!(data instanceof ArrayBuffer)) return;
    const { header, jpeg } = parseReply(data);
    const now = this.now();
    // The server answers in order and drops stale frames: everything up to this id is done.
    for (const id of this.inFlight.keys()) if (id <= header.frameId) this.inFlight.delete(id);
    this.receiveRate.tick(now);
    this.roundTrip.add(now - header.captureMs);
    this.serverLatency.add(header.sentMs - header.receivedMs);
    this.events.onFrame(header, jpeg);
  }
}

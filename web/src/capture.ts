// Camera frames -> JPEG -> socket, paced by the camera's own frames.
//
// requestVideoFrameCallback fires once per new camera frame and gives its capture time (the
// timestamp sent with the frame, so the server can place it on the keypoint timeline);
// requestAnimationFrame is the fallback. A frame is taken only when the target FPS allows it,
// the encoder is idle and the connection has room - otherwise it is skipped, never queued.

import type { MirrorConnection } from "./connection";

export interface CaptureOptions {
  targetFps: number;
  jpegQuality: number;
}

type FrameMeta = { captureTime?: number; presentationTime?: number; expectedDisplayTime?: number };
type VideoWithRvfc = HTMLVideoElement & {
  requestVideoFrameCallback?: (cb: (now: number, meta: FrameMeta) => void) => number;
  cancelVideoFrameCallback?: (handle: number) => void;
};

export class FrameCapture {
  private frameId = 0;
  private lastCapture = -Infinity;
  private encoding = false;
  private stopped = false;
  private handle = 0;
  private worker: Worker | null = null;
  private fallbackCanvas: HTMLCanvasElement | null = null;

  constructor(
    private readonly video: VideoWithRvfc,
    private readonly connection: MirrorConnection,
    private options: CaptureOptions,
  ) {
    if (typeof OffscreenCanvas !== "undefined" && typeof Worker !== "undefined") {
      this.worker = new Worker(new URL("./encoder.worker.ts", import.meta.url), { type: "module" });
      this.worker.onmessage = (ev: MessageEvent<{ frameId: number; message?: ArrayBuffer; error?: string }>) => {
        this.encoding = false;
        if (ev.data.message) this.connection.sendPacked(ev.data.frameId, ev.data.message);
      };
    }
    this.schedule();
  }

  setOptions(options: CaptureOptions): void {
    this.options = options;
  }

  stop(): void {
    this.stopped = true;
    if (this.video.cancelVideoFrameCallback) this.video.cancelVideoFrameCallback(this.handle);
    else cancelAnimationFrame(this.handle);
    this.worker?.terminate();
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.video.requestVideoFrameCallback) {
      this.handle = this.video.requestVideoFrameCallback((now, meta) => this.onFrame(meta.captureTime ?? now));
    } else {
      this.handle = requestAnimationFrame((now) => this.onFrame(now));
    }
  }

  private onFrame(captureMs: number): void {
    this.schedule();
    const interval = 1000 / this.options.targetFps;
    // A little slack so a 30 FPS camera at a 30 FPS target does not skip every other frame.
    if (captureMs - this.lastCapture < interval * 0.9 || this.encoding || !this.connection.canSend()) return;
    if (!this.video.videoWidth) return;
    this.lastCapture = captureMs;
    this.encoding = true;
    const frameId = this.frameId++;
    void this.encode(frameId, captureMs).catch(() => {
      this.encoding = false;
    });
  }

  private async encode(frameId: number, captureMs: number): Promise<void> {
    const quality = this.options.jpegQuality;
    if (this.worker) {
      const bitmap = await createImageBitmap(this.video);
      this.worker.postMessage({ bitmap, frameId, captureMs, quality }, [bitmap]);
      return; // the worker's reply sends it
    }
    const canvas = (this.fallbackCanvas ??= document.createElement("canvas"));
    canvas.width = this.video.videoWidth;
    canvas.height = this.video.videoHeight;
    canvas.getContext("2d")!.drawImage(this.video, 0, 0);
    const blob = await new Promise<Blob | null>((r) => canvas.toBlob(r, "image/jpeg", quality));
    this.encoding = false;
    if (blob) this.connection.sendFrame(frameId, captureMs, await blob.arrayBuffer());
  }
}

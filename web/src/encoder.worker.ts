// Encodes camera frames to JPEG off the main thread (OffscreenCanvas.convertToBlob) and packs
// them with the frame header, so the main thread only hands over a bitmap and sends the result.
import { packFrame } from "./protocol";

interface EncodeRequest {
  bitmap: ImageBitmap;
  frameId: number;
  captureMs: number;
  quality: number;
}

let canvas: OffscreenCanvas | null = null;

self.onmessage = async (ev: MessageEvent<EncodeRequest>) => {
  const { bitmap, frameId, captureMs, quality } = ev.data;
  try {
    if (!canvas || canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    }
    const ctx = canvas.getContext("2d") as OffscreenCanvasRenderingContext2D;
    ctx.drawImage(bitmap, 0, 0);
    const blob = await canvas.convertToBlob({ type: "image/jpeg", quality });
    const message = packFrame(frameId, captureMs, await blob.arrayBuffer());
    (self as unknown as Worker).postMessage({ frameId, message }, [message]);
  } catch (err) {
    (self as unknown as Worker).postMessage({ frameId, error: String(err) });
  } finally {
    bitmap.close();
  }
};

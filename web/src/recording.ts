// Snapshot (PNG) and clip (WebM via MediaRecorder) of the rendered mirror canvas.

export function download(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

const stamp = () => new Date().toISOString().replace(/[:.]/g, "-");

export async function snapshot(canvas: HTMLCanvasElement): Promise<void> {
  const blob = await new Promise<Blob | null>((r) => canvas.toBlob(r, "image/png"));
  if (!blob) throw new Error("the mirror has no picture yet");
  download(blob, `smart-closet-${stamp()}.png`);
}

export function clipMimeType(): string | null {
  if (typeof MediaRecorder === "undefined") return null;
  for (const t of ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"]) {
    if (MediaRecorder.isTypeSupported(t)) return t;
  }
  return null;
}

/** Records `seconds` of the canvas and downloads it as WebM. */
export async function recordClip(canvas: HTMLCanvasElement, seconds: number): Promise<void> {
  const mimeType = clipMimeType();
  if (!mimeType) throw new Error("this browser cannot record video");
  const recorder = new MediaRecorder(canvas.captureStream(30), { mimeType, videoBitsPerSecond: 4_000_000 });
  const chunks: Blob[] = [];
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  const done = new Promise<void>((resolve) => (recorder.onstop = () => resolve()));
  recorder.start(1000);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  recorder.stop();
  await done;
  download(new Blob(chunks, { type: "video/webm" }), `smart-closet-${stamp()}.webm`);
}

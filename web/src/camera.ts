// The camera: open it, list cameras, and say plainly what went wrong.

export interface CameraChoice {
  deviceId: string; // "" = the default camera
  width: number;
  height: number;
}

export const RESOLUTIONS: ReadonlyArray<{ label: string; width: number; height: number }> = [
  { label: "1280 × 720", width: 1280, height: 720 },
  { label: "1920 × 1080", width: 1920, height: 1080 },
  { label: "960 × 540", width: 960, height: 540 },
  { label: "640 × 360", width: 640, height: 360 },
];

export async function openCamera(choice: CameraChoice): Promise<MediaStream> {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw Object.assign(new Error("this browser gives no camera access (a secure context is needed)"), {
      name: "NotSupportedError",
    });
  }
  return navigator.mediaDevices.getUserMedia({
    audio: false,
    video: {
      deviceId: choice.deviceId ? { exact: choice.deviceId } : undefined,
      width: { ideal: choice.width },
      height: { ideal: choice.height },
      frameRate: { ideal: 40 },
    },
  });
}

export async function listCameras(): Promise<MediaDeviceInfo[]> {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === "videoinput");
}

export function cameraErrorMessage(err: unknown): string {
  const name = (err as { name?: string })?.name ?? "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera permission was denied. Allow the camera for this page in the browser's site settings, then press Start camera again.";
    case "NotFoundError":
    case "OverconstrainedError":
    case "DevicesNotFoundError":
      return "No camera was found. Connect a camera (or pick another one) and press Start camera again.";
    case "NotReadableError":
    case "TrackStartError":
      return "The camera is in use by another application. Close it and try again.";
    case "NotSupportedError":
      return "This browser gives no camera access here. Open the page over https or on localhost.";
    default:
      return `The camera could not be started: ${(err as Error)?.message ?? String(err)}`;
  }
}

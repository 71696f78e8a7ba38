import { useCallback, useEffect, useRef, useState } from "react";

import { cameraErrorMessage, listCameras, openCamera, RESOLUTIONS } from "./camera";
import { FrameCapture } from "./capture";
import { apiFetch, withToken } from "./auth";
import { AddGarment } from "./components/AddGarment";
import { CameraControls, type CameraSettings } from "./components/CameraControls";
import { ClosetPanel } from "./components/ClosetPanel";
import { Hud, type HudFigures } from "./components/Hud";
import { type ConnectionStatus, MirrorConnection } from "./connection";
import { EMPTY_LOOK, type GarmentInfo, type Look, lookFromIds, lookIds, toggle } from "./look";
import { type ServerStats, selectMessage } from "./protocol";
import { clipMimeType, recordClip, snapshot } from "./recording";

const CLIP_SECONDS = 6;
const JPEG_QUALITY = 0.8;

function socketUrl(): string {
  return withToken(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
}

declare global {
  interface Window {
    smartcloset?: { figures(): HudFigures };
  }
}

export function App() {
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const videoRef = useRef<HTMLVideoElement>(null);
  const connRef = useRef<MirrorConnection | null>(null);
  const captureRef = useRef<FrameCapture | null>(null);
  const statsRef = useRef<ServerStats | null>(null);
  const lookRef = useRef<Look>(EMPTY_LOOK);
  const drawSeq = useRef({ arrived: 0, drawn: 0 });

  const [garments, setGarments] = useState<GarmentInfo[]>([]);
  const [look, setLook] = useState<Look>(EMPTY_LOOK);
  const [cameras, setCameras] = useState<MediaDeviceInfo[]>([]);
  const [settings, setSettings] = useState<CameraSettings>({ deviceId: "", resolution: 0, targetFps: 30, maxInFlight: 2 });
  const [stream, setStream] = useState<MediaStream | null>(null);
  const [connection, setConnection] = useState<{ status: ConnectionStatus; retryInMs?: number; refusal?: string }>({ status: "connecting" });
  const [cameraError, setCameraError] = useState<string | null>(null);
  const [serverError, setServerError] = useState<string | null>(null);
  const [hasPicture, setHasPicture] = useState(false);
  const [recording, setRecording] = useState(false);
  const [figures, setFigures] = useState<HudFigures>({
    sendFps: 0, receiveFps: 0, roundTripP50: null, serverLatencyP50: null, poseFps: null, batchSize: null, dropped: null,
  });

  const sendLook = useCallback((next: Look) => {
    lookRef.current = next;
    connRef.current?.sendText(selectMessage(lookIds(next)));
  }, []);

  // The closet, and the server's default look (kept when the closet is reloaded).
  const loadCloset = useCallback(
    (keepLook: boolean) =>
      apiFetch("/api/garments")
        .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
        .then((data: { garments: GarmentInfo[]; default: string[] }) => {
          setGarments(data.garments);
          const ids = keepLook ? lookIds(lookRef.current) : data.default;
          const next = lookFromIds(ids, data.garments);
          setLook(next);
          sendLook(next);
        })
        .catch(() => setServerError("The closet could not be loaded from the server.")),
    [sendLook],
  );
  useEffect(() => {
    void loadCloset(false);
  }, [loadCloset]);

  // The socket: draws every reply (newest wins), reconnects on its own.
  useEffect(() => {
    const conn = new MirrorConnection(socketUrl(), {
      onStatus: (status, retryInMs, refusal) => {
        setConnection({ status, retryInMs, refusal });
        if (status === "open") {
          setServerError(null);
          conn.sendText(selectMessage(lookIds(lookRef.current)));
        }
      },
      onMessage: (m) => {
        if (m.type === "stats") statsRef.current = m;
        else if (m.type === "error") setServerError(`Server: ${m.message}`);
      },
      onFrame: (_header, jpeg) => {
        const seq = ++drawSeq.current.arrived;
        createImageBitmap(new Blob([jpeg as BlobPart], { type: "image/jpeg" }))
          .then((bitmap) => {
            const canvas = canvasRef.current;
            if (!canvas || seq < drawSeq.current.drawn) return bitmap.close(); // a newer one is drawn
            drawSeq.current.drawn = seq;
            if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
              canvas.width = bitmap.width;
              canvas.height = bitmap.height;
            }
            const ctx = canvas.getContext("2d")!;
            ctx.setTransform(-1, 0, 0, 1, canvas.width, 0); // a mirror shows you mirrored
            ctx.drawImage(bitmap, 0, 0);
            bitmap.close();
            setHasPicture(true);
          })
          .catch(() => undefined);
      },
    });
    connRef.current = conn;
    const timer = setInterval(() => {
      const now = performance.now();
      const s = statsRef.current;
      setFigures({
        sendFps: conn.sendRate.rate(now),
        receiveFps: conn.receiveRate.rate(now),
        roundTripP50: conn.roundTrip.percentile(50),
        serverLatencyP50: conn.serverLatency.percentile(50),
        poseFps: s?.pose_fps ?? null,
        batchSize: s?.mean_batch_size ?? null,
        dropped: s?.dropped ?? null,
      });
    }, 500);
    return () => {
      clearInterval(timer);
      conn.close();
    };
  }, []);

  const figuresRef = useRef(figures);
  figuresRef.current = figures;
  useEffect(() => {
    window.smartcloset = { figures: () => figuresRef.current };
  }, []);

  // Camera on/off and capture settings.
  const startCamera = useCallback(async () => {
    setCameraError(null);
    try {
      const r = RESOLUTIONS[settings.resolution];
      const s = await openCamera({ deviceId: settings.deviceId, width: r.width, height: r.height });
      setStream(s);
      listCameras().then(setCameras).catch(() => undefined);
    } catch (err) {
      setCameraError(cameraErrorMessage(err));
    }
  }, [settings.deviceId, settings.resolution]);

  const stopCamera = useCallback(() => {
    stream?.getTracks().forEach((t) => t.stop());
    setStream(null);
  }, [stream]);

  useEffect(() => {
    const video = videoRef.current;
    const conn = connRef.current;
    if (!stream || !video || !conn) return;
    video.srcObject = stream;
    void video.play().catch(() => undefined);
    const capture = new FrameCapture(video, conn, { targetFps: settings.targetFps, jpegQuality: JPEG_QUALITY });
    captureRef.current = capture;
    return () => {
      capture.stop();
      captureRef.current = null;
    };
    // settings changes below are applied live, without restarting the capture
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [stream]);

  useEffect(() => {
    captureRef.current?.setOptions({ targetFps: settings.targetFps, jpegQuality: JPEG_QUALITY });
    connRef.current?.setMaxInFlight(settings.maxInFlight);
  }, [settings.targetFps, settings.maxInFlight]);

  const changeSettings = (next: CameraSettings) => {
    const cameraChanged = next.deviceId !== settings.deviceId || next.resolution !== settings.resolution;
    setSettings(next);
    if (cameraChanged && stream) {
      stream.getTracks().forEach((t) => t.stop());
      setStream(null);
      setTimeout(() => document.getElementById("start-camera")?.click(), 0);
    }
  };

  const onToggle = (g: GarmentInfo) => {
    const next = toggle(look, g, garments);
    setLook(next);
    sendLook(next);
  };

  const onSnapshot = () => {
    if (canvasRef.current) snapshot(canvasRef.current).catch((e) => setServerError(String(e.message ?? e)));
  };
  const onClip = () => {
    if (!canvasRef.current || recording) return;
    setRecording(true);
    recordClip(canvasRef.current, CLIP_SECONDS)
      .catch((e) => setServerError(String(e.message ?? e)))
      .finally(() => setRecording(false));
  };

  const retryIn = `${Math.ceil((connection.retryInMs ?? 0) / 1000)} s`;
  const serverMessage =
    connection.status === "closed"
      ? connection.refusal
        ? `The server refused the connection: ${connection.refusal}. Trying again in ${retryIn}…`
        : `The server is unreachable. Reconnecting in ${retryIn}…`
      : connection.status === "connecting"
        ? "Connecting to the server…"
        : null;

  return (
    <div className="app">
      <main className="stage">
        <canvas ref={canvasRef} width={1280} height={720} role="img" aria-label="Your mirror image, wearing the chosen garments" />
        {!stream && !hasPicture && <p className="placeholder">Press “Start camera” to see yourself in the mirror.</p>}
        <video ref={videoRef} muted playsInline hidden />
      </main>
      <aside className="panel">
        <h1>Smart Closet</h1>
        <div className="messages">
          {cameraError && <p role="alert" className="error" data-message="camera">{cameraError}</p>}
          {serverMessage && <p role="status" className="warning" data-message="server">{serverMessage}</p>}
          {serverError && <p role="status" className="warning" data-message="server-error">{serverError}</p>}
        </div>
        <CameraControls
          cameras={cameras}
          settings={settings}
          running={!!stream}
          onChange={changeSettings}
          onStart={startCamera}
          onStop={stopCamera}
        />
        <div className="actions">
          <button type="button" onClick={onSnapshot} disabled={!hasPicture}>
            Snapshot
          </button>
          <button type="button" onClick={onClip} disabled={!hasPicture || recording || !clipMimeType()}>
            {recording ? `Recording ${CLIP_SECONDS} s…` : `Clip (${CLIP_SECONDS} s)`}
          </button>
        </div>
        <ClosetPanel garments={garments} look={look} onToggle={onToggle} />
        <AddGarment onChanged={() => void loadCloset(true)} />
        <Hud figures={figures} />
      </aside>
    </div>
  );
}

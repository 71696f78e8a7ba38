import { RESOLUTIONS } from "../camera";

export interface CameraSettings {
  deviceId: string;
  resolution: number; // index into RESOLUTIONS
  targetFps: number;
  maxInFlight: number;
}

interface Props {
  cameras: MediaDeviceInfo[];
  settings: CameraSettings;
  running: boolean;
  onChange(settings: CameraSettings): void;
  onStart(): void;
  onStop(): void;
}

export function CameraControls({ cameras, settings, running, onChange, onStart, onStop }: Props) {
  return (
    <fieldset className="camera">
      <legend>Camera</legend>
      <button type="button" className="primary" onClick={running ? onStop : onStart}>
        {running ? "Stop camera" : "Start camera"}
      </button>
      <label>
        Camera
        <select value={settings.deviceId} onChange={(e) => onChange({ ...settings, deviceId: e.target.value })}>
          <option value="">Default camera</option>
          {cameras.map((c, i) => (
            <option key={c.deviceId || i} value={c.deviceId}>
              {c.label || `Camera ${i + 1}`}
            </option>
          ))}
        </select>
      </label>
      <label>
        Resolution
        <select value={settings.resolution} onChange={(e) => onChange({ ...settings, resolution: Number(e.target.value) })}>
          {RESOLUTIONS.map((r, i) => (
            <option key={r.label} value={i}>
              {r.label}
            </option>
          ))}
        </select>
      </label>
      <label>
        Target FPS <output>{settings.targetFps}</output>
        <input
          type="range"
          min={5}
          max={40}
          step={1}
          value={settings.targetFps}
          onChange={(e) => onChange({ ...settings, targetFps: Number(e.target.value) })}
        />
      </label>
      <label>
        Frames in flight
        <select value={settings.maxInFlight} onChange={(e) => onChange({ ...settings, maxInFlight: Number(e.target.value) })}>
          {[1, 2, 3, 4].map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </label>
    </fieldset>
  );
}

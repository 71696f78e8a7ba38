export interface HudFigures {
  sendFps: number;
  receiveFps: number;
  roundTripP50: number | null;
  serverLatencyP50: number | null;
  poseFps: number | null;
  batchSize: number | null;
  dropped: number | null;
}

const fmt = (v: number | null, digits: number, unit = "") => (v === null || !Number.isFinite(v) ? "–" : `${v.toFixed(digits)}${unit}`);

/** Live figures: what the page sends and gets back, and what the server reports. */
export function Hud({ figures }: { figures: HudFigures }) {
  const rows: Array<[string, string, string]> = [
    ["send-fps", "Send FPS", fmt(figures.sendFps, 1)],
    ["receive-fps", "Receive FPS", fmt(figures.receiveFps, 1)],
    ["round-trip", "Round trip p50", fmt(figures.roundTripP50, 0, " ms")],
    ["server-latency", "Server latency p50", fmt(figures.serverLatencyP50, 1, " ms")],
    ["pose-fps", "Pose FPS", fmt(figures.poseFps, 1)],
    ["batch-size", "Batch size", fmt(figures.batchSize, 2)],
    ["dropped", "Dropped frames", fmt(figures.dropped, 0)],
  ];
  return (
    <dl className="hud" aria-label="Live figures">
      {rows.map(([id, label, value]) => (
        <div key={id}>
          <dt>{label}</dt>
          <dd data-hud={id}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

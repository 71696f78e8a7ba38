import { useEffect, useRef, useState } from "react";

import { apiFetch } from "../auth";
import type { GarmentInfo } from "../look";

type Anchors = Record<string, [number, number]>;
interface Uploaded extends GarmentInfo {
  anchors: Anchors;
}

const CATEGORIES: Array<[GarmentInfo["category"], string]> = [
  ["top", "Top"],
  ["outerwear", "Outerwear"],
  ["dress", "Dress"],
  ["bottom", "Bottom"],
];

async function errorOf(resp: Response): Promise<string> {
  try {
    return ((await resp.json()) as { error?: string }).error ?? `HTTP ${resp.status}`;
  } catch {
    return resp.status === 413 ? "The photo is too large." : `HTTP ${resp.status}`;
  }
}

/** Add a garment from a photo: upload, then check (and drag) the anchors it found, then keep it. */
export function AddGarment({ onChanged }: { onChanged(): void }) {
  const [category, setCategory] = useState<GarmentInfo["category"]>("top");
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [garment, setGarment] = useState<Uploaded | null>(null);
  const fileRef = useRef<HTMLInputElement>(null);

  const upload = async (ev: React.FormEvent) => {
    ev.preventDefault();
    const file = fileRef.current?.files?.[0];
    if (!file) return setError("Choose a photo of the garment first.");
    const body = new FormData();
    body.append("photo", file);
    body.append("category", category);
    if (name.trim()) body.append("name", name.trim());
    setBusy(true);
    setError(null);
    try {
      const resp = await apiFetch("/api/garments", { method: "POST", body });
      if (!resp.ok) return setError(await errorOf(resp));
      setGarment((await resp.json()) as Uploaded);
      onChanged();
    } catch {
      setError("The server could not be reached.");
    } finally {
      setBusy(false);
    }
  };

  const save = async (anchors: Anchors) => {
    if (!garment) return;
    const resp = await apiFetch(`/api/garments/${garment.id}/anchors`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ anchors }),
    });
    if (!resp.ok) return setError(await errorOf(resp));
    setGarment(null);
    onChanged();
  };

  const discard = async () => {
    if (!garment) return;
    await apiFetch(`/api/garments/${garment.id}`, { method: "DELETE" });
    setGarment(null);
    onChanged();
  };

  return (
    <section className="add-garment" aria-label="Add a garment">
      <h2>Add a garment</h2>
      {garment ? (
        <AnchorEditor garment={garment} onSave={save} onDiscard={discard} />
      ) : (
        <form onSubmit={upload}>
          <label>
            Photo (laid flat on a plain background)
            <input ref={fileRef} type="file" accept="image/jpeg,image/png" name="photo" />
          </label>
          <label>
            Kind
            <select value={category} onChange={(e) => setCategory(e.target.value as GarmentInfo["category"])}>
              {CATEGORIES.map(([value, label]) => (
                <option key={value} value={value}>
                  {label}
                </option>
              ))}
            </select>
          </label>
          <label>
            Name
            <input type="text" maxLength={120} value={name} onChange={(e) => setName(e.target.value)} placeholder="My shirt" />
          </label>
          <button type="submit" disabled={busy}>
            {busy ? "Adding…" : "Add garment"}
          </button>
        </form>
      )}
      {error && (
        <p role="alert" className="error" data-message="upload">
          {error}
        </p>
      )}
    </section>
  );
}

/** The garment with its anchor points; drag a point (or focus it and use the arrow keys) to move it. */
export function AnchorEditor({
  garment,
  onSave,
  onDiscard,
}: {
  garment: Uploaded;
  onSave(anchors: Anchors): void;
  onDiscard(): void;
}) {
  const [anchors, setAnchors] = useState<Anchors>(garment.anchors);
  const [size, setSize] = useState<[number, number] | null>(null);
  const [dragging, setDragging] = useState<string | null>(null);
  const svgRef = useRef<SVGSVGElement>(null);
  const src = `/api/garments/${garment.id}/image.png`;

  useEffect(() => {
    const img = new Image();
    img.onload = () => setSize([img.naturalWidth, img.naturalHeight]);
    img.src = src;
  }, [src]);

  const toImage = (ev: React.PointerEvent): [number, number] => {
    const svg = svgRef.current!;
    const r = svg.getBoundingClientRect();
    const [w, h] = size ?? [1, 1];
    return [((ev.clientX - r.left) / r.width) * w, ((ev.clientY - r.top) / r.height) * h];
  };
  const move = (name: string, p: [number, number]) => setAnchors((a) => ({ ...a, [name]: [Math.round(p[0]), Math.round(p[1])] }));
  const radius = size ? Math.max(size[0], size[1]) / 60 : 6;

  return (
    <div className="anchor-editor">
      <p>Check the points: drag any that are off (or focus one and use the arrow keys), then keep the garment.</p>
      {size && (
        <svg
          ref={svgRef}
          viewBox={`0 0 ${size[0]} ${size[1]}`}
          role="group"
          aria-label={`${garment.name} with its anchor points`}
          onPointerMove={(ev) => dragging && move(dragging, toImage(ev))}
          onPointerUp={() => setDragging(null)}
          onPointerLeave={() => setDragging(null)}
        >
          <image href={src} width={size[0]} height={size[1]} />
          {Object.entries(anchors).map(([name, [x, y]]) => (
            <g key={name}>
              <circle
                cx={x}
                cy={y}
                r={radius}
                className="anchor"
                tabIndex={0}
                role="slider"
                aria-label={`${name.replace("_", " ")} at ${x}, ${y}`}
                aria-valuenow={x}
                data-anchor={name}
                onPointerDown={(ev) => {
                  (ev.target as Element).setPointerCapture?.(ev.pointerId);
                  setDragging(name);
                }}
                onKeyDown={(ev) => {
                  const step = ev.shiftKey ? 10 : 2;
                  const d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[ev.key];
                  if (d) {
                    ev.preventDefault();
                    move(name, [x + d[0], y + d[1]]);
                  }
                }}
              />
              <text x={x + radius * 1.3} y={y + radius * 0.4} fontSize={radius * 1.6}>
                {name.replace("_", " ")}
              </text>
            </g>
          ))}
        </svg>
      )}
      <div className="actions">
        <button type="button" className="primary" onClick={() => onSave(anchors)}>
          Keep garment
        </button>
        <button type="button" onClick={onDiscard}>
          Discard
        </button>
      </div>
    </div>
  );
}

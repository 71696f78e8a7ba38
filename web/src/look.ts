// The look: one garment per layer (bottom, top, outerwear). A dress fills top and bottom.

export type Category = "top" | "outerwear" | "dress" | "bottom";
export type Layer = "bottom" | "top" | "outerwear";

export interface GarmentInfo {
  id: string;
  name: string;
  category: Category;
  layer: number;
  thumbnail: string;
}

export type Look = Record<Layer, string | null>;

export const EMPTY_LOOK: Look = { bottom: null, top: null, outerwear: null };
export const LAYERS: Layer[] = ["bottom", "top", "outerwear"];

export function layerOf(category: Category): Layer {
  return category === "dress" ? "top" : category;
}

/** Select a garment (replacing its layer) or deselect it if it is worn. */
export function toggle(look: Look, garment: GarmentInfo, garments: GarmentInfo[]): Look {
  const layer = layerOf(garment.category);
  if (look[layer] === garment.id) return { ...look, [layer]: null };
  const next: Look = { ...look, [layer]: garment.id };
  const byId = new Map(garments.map((g) => [g.id, g]));
  if (garment.category === "dress") next.bottom = null; // a dress is its own bottom
  if (garment.category === "bottom" && next.top && byId.get(next.top)?.category === "dress") next.top = null;
  return next;
}

/** Garment ids in drawing order, bottom layer first. */
export function lookIds(look: Look): string[] {
  return LAYERS.map((l) => look[l]).filter((id): id is string => id !== null);
}

export function lookFromIds(ids: string[], garments: GarmentInfo[]): Look {
  let look = { ...EMPTY_LOOK };
  for (const id of ids) {
    const g = garments.find((x) => x.id === id);
    if (g && look[layerOf(g.category)] !== id) look = toggle(look, g, garments);
  }
  return look;
}

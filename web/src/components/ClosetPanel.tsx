import { type GarmentInfo, type Look, layerOf } from "../look";

const GROUPS: Array<{ title: string; categories: GarmentInfo["category"][] }> = [
  { title: "Tops", categories: ["top"] },
  { title: "Dresses", categories: ["dress"] },
  { title: "Outerwear", categories: ["outerwear"] },
  { title: "Bottoms", categories: ["bottom"] },
];

interface Props {
  garments: GarmentInfo[];
  look: Look;
  onToggle(garment: GarmentInfo): void;
}

/** Garment cards grouped by category; each card is a toggle button (one garment per layer). */
export function ClosetPanel({ garments, look, onToggle }: Props) {
  if (!garments.length) return <p className="muted">The closet is empty.</p>;
  return (
    <nav aria-label="Closet" className="closet">
      {GROUPS.map(({ title, categories }) => {
        const items = garments.filter((g) => categories.includes(g.category));
        if (!items.length) return null;
        return (
          <section key={title} aria-label={title}>
            <h2>{title}</h2>
            <ul>
              {items.map((g) => {
                const worn = look[layerOf(g.category)] === g.id;
                return (
                  <li key={g.id}>
                    <button
                      type="button"
                      className={worn ? "card worn" : "card"}
                      aria-pressed={worn}
                      data-garment={g.id}
                      onClick={() => onToggle(g)}
                      title={worn ? `Take off ${g.name}` : `Wear ${g.name}`}
                    >
                      <img src={g.thumbnail} alt="" width={72} height={72} loading="lazy" />
                      <span>{g.name}</span>
                    </button>
                  </li>
                );
              })}
            </ul>
          </section>
        );
      })}
    </nav>
  );
}

import { describe, expect, it } from "vitest";

import { EMPTY_LOOK, type GarmentInfo, lookFromIds, lookIds, toggle } from "../look";

const g = (id: string, category: GarmentInfo["category"]): GarmentInfo => ({ id, name: id, category, layer: 0, thumbnail: "" });
const closet = [g("tee", "top"), g("shirt", "top"), g("jacket", "outerwear"), g("jeans", "bottom"), g("dress", "dress")];

describe("the look", () => {
  it("wears one garment per layer, bottom first", () => {
    let look = toggle(EMPTY_LOOK, closet[0], closet);
    look = toggle(look, closet[3], closet);
    look = toggle(look, closet[2], closet);
    expect(lookIds(look)).toEqual(["jeans", "tee", "jacket"]);
    look = toggle(look, closet[1], closet); // another top replaces the tee
    expect(lookIds(look)).toEqual(["jeans", "shirt", "jacket"]);
  });

  it("takes a garment off when it is chosen again", () => {
    const look = toggle(toggle(EMPTY_LOOK, closet[0], closet), closet[0], closet);
    expect(lookIds(look)).toEqual([]);
  });

  it("a dress replaces top and bottom; a bottom replaces a dress", () => {
    let look = lookFromIds(["jeans", "tee"], closet);
    look = toggle(look, closet[4], closet);
    expect(lookIds(look)).toEqual(["dress"]);
    look = toggle(look, closet[3], closet);
    expect(lookIds(look)).toEqual(["jeans"]);
  });

  it("ignores unknown ids from the server", () => {
    expect(lookIds(lookFromIds(["nope", "tee"], closet))).toEqual(["tee"]);
  });
});

import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { cameraErrorMessage } from "../camera";
import { ClosetPanel } from "../components/ClosetPanel";
import { Hud } from "../components/Hud";
import { EMPTY_LOOK, type GarmentInfo } from "../look";

afterEach(cleanup);

const garments: GarmentInfo[] = [
  { id: "tee", name: "Navy T-shirt", category: "top", layer: 20, thumbnail: "/t.png" },
  { id: "coat", name: "Coat", category: "outerwear", layer: 30, thumbnail: "/c.png" },
];

describe("ClosetPanel", () => {
  it("groups garments by category as labelled toggle buttons", () => {
    const onToggle = vi.fn();
    render(<ClosetPanel garments={garments} look={{ ...EMPTY_LOOK, top: "tee" }} onToggle={onToggle} />);
    expect(screen.getByRole("region", { name: "Tops" })).toBeTruthy();
    expect(screen.getByRole("region", { name: "Outerwear" })).toBeTruthy();
    expect(screen.queryByRole("region", { name: "Bottoms" })).toBeNull();
    const tee = screen.getByRole("button", { name: /Navy T-shirt/ });
    expect(tee.getAttribute("aria-pressed")).toBe("true");
    const coat = screen.getByRole("button", { name: /Coat/ });
    expect(coat.getAttribute("aria-pressed")).toBe("false");
    fireEvent.click(coat);
    expect(onToggle).toHaveBeenCalledWith(garments[1]);
  });

  it("says when the closet is empty", () => {
    render(<ClosetPanel garments={[]} look={EMPTY_LOOK} onToggle={() => undefined} />);
    expect(screen.getByText(/closet is empty/)).toBeTruthy();
  });
});

describe("Hud", () => {
  it("shows figures, with a dash for the unknown", () => {
    render(
      <Hud
        figures={{ sendFps: 29.96, receiveFps: 28.5, roundTripP50: 41.2, serverLatencyP50: null, poseFps: 25, batchSize: 1.5, dropped: 3 }}
      />,
    );
    const value = (id: string) => document.querySelector(`[data-hud="${id}"]`)!.textContent;
    expect(value("send-fps")).toBe("30.0");
    expect(value("round-trip")).toBe("41 ms");
    expect(value("server-latency")).toBe("–");
    expect(value("batch-size")).toBe("1.50");
    expect(value("dropped")).toBe("3");
  });
});

describe("camera errors", () => {
  it("explains denied permission, a missing camera and a busy one", () => {
    expect(cameraErrorMessage({ name: "NotAllowedError" })).toMatch(/permission was denied/);
    expect(cameraErrorMessage({ name: "NotFoundError" })).toMatch(/No camera was found/);
    expect(cameraErrorMessage({ name: "NotReadableError" })).toMatch(/in use/);
    expect(cameraErrorMessage(new Error("boom"))).toMatch(/boom/);
  });
});

import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { AddGarment, AnchorEditor } from "../components/AddGarment";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

class FakeImage {
  onload: (() => void) | null = null;
  naturalWidth = 400;
  naturalHeight = 300;
  set src(_: string) {
    setTimeout(() => this.onload?.(), 0);
  }
}

const garment = {
  id: "tee-1",
  name: "Tee",
  category: "top" as const,
  layer: 20,
  thumbnail: "",
  anchors: { left_shoulder: [300, 50] as [number, number], right_shoulder: [100, 50] as [number, number] },
};

describe("AnchorEditor", () => {
  it("moves a focused anchor with the arrow keys and saves all anchors", async () => {
    vi.stubGlobal("Image", FakeImage);
    const onSave = vi.fn();
    render(<AnchorEditor garment={garment} onSave={onSave} onDiscard={() => undefined} />);
    const point = await screen.findByRole("slider", { name: /left shoulder/ });
    fireEvent.keyDown(point, { key: "ArrowRight" });
    fireEvent.keyDown(point, { key: "ArrowDown", shiftKey: true });
    fireEvent.click(screen.getByRole("button", { name: "Keep garment" }));
    expect(onSave).toHaveBeenCalledWith({ left_shoulder: [302, 60], right_shoulder: [100, 50] });
  });
});

describe("AddGarment", () => {
  it("asks for a photo, and shows the server's reason when an upload is refused", async () => {
    const fetchMock = vi.fn().mockResolvedValue(new Response(JSON.stringify({ error: "not a JPEG or PNG image" }), { status: 400 }));
    vi.stubGlobal("fetch", fetchMock);
    render(<AddGarment onChanged={() => undefined} />);
    fireEvent.click(screen.getByRole("button", { name: "Add garment" }));
    expect((await screen.findByRole("alert")).textContent).toMatch(/Choose a photo/);
    const input = screen.getByLabelText(/Photo/) as HTMLInputElement;
    fireEvent.change(input, { target: { files: [new File(["gif"], "x.gif", { type: "image/gif" })] } });
    fireEvent.click(screen.getByRole("button", { name: "Add garment" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toMatch(/not a JPEG or PNG/));
    expect(fetchMock.mock.calls[0][0]).toBe("/api/garments");
    expect((fetchMock.mock.calls[0][1].body as FormData).get("category")).toBe("top");
  });
});

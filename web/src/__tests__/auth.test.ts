import { afterEach, describe, expect, it, vi } from "vitest";

import { accessToken, apiFetch, TOKEN_HEADER, withAuth, withToken } from "../auth";

describe("access token", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    window.history.replaceState({}, "", "/");
  });

  it("is read from the page's own query string", () => {
    expect(accessToken("?token=abc-_1")).toBe("abc-_1");
    expect(accessToken("?x=1&token=a%2Bb")).toBe("a+b");
    expect(accessToken("")).toBeNull();
    expect(accessToken("?token=")).toBeNull();
  });

  it("goes into the socket's URL, encoded, and nowhere without one", () => {
    expect(withToken("ws://h:8000/ws", "a+b/c")).toBe("ws://h:8000/ws?token=a%2Bb%2Fc");
    expect(withToken("/api/x?y=1", "t")).toBe("/api/x?y=1&token=t");
    expect(withToken("/ws", null)).toBe("/ws");
  });

  it("goes into API requests as a header, keeping the request's own headers", () => {
    const init = withAuth({ method: "PUT", headers: { "Content-Type": "application/json" } }, "t0k");
    const headers = new Headers(init.headers);
    expect(init.method).toBe("PUT");
    expect(headers.get(TOKEN_HEADER)).toBe("t0k");
    expect(headers.get("Content-Type")).toBe("application/json");
    const none = { method: "GET" };
    expect(withAuth(none, null)).toBe(none);
  });

  it("is sent by apiFetch when the page was opened with ?token=", async () => {
    const fetchMock = vi.fn().mockResolvedValue(new Response("{}"));
    vi.stubGlobal("fetch", fetchMock);
    window.history.replaceState({}, "", "/?token=from-url");
    await apiFetch("/api/garments/x", { method: "DELETE" });
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe("/api/garments/x");
    expect(init.method).toBe("DELETE");
    expect(new Headers(init.headers).get(TOKEN_HEADER)).toBe("from-url");
    window.history.replaceState({}, "", "/");
    await apiFetch("/api/garments");
    expect(new Headers(fetchMock.mock.calls[1][1].headers).get(TOKEN_HEADER)).toBeNull();
  });
});

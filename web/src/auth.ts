// The access token. A server reachable from other machines requires one, and prints the page's
// address with it (`/?token=…`); the page reads it from its own URL and passes it on: in the
// socket's URL (a browser cannot set headers on a WebSocket) and as a header on API calls.
// Images (<img> thumbnails) are covered by the cookie the server sets when it serves the page.

export const TOKEN_HEADER = "X-Smart-Closet-Token";

/** The token in the page's own query string, or null when it was opened without one. */
export function accessToken(search: string = globalThis.location?.search ?? ""): string | null {
  const token = new URLSearchParams(search).get("token");
  return token ? token : null;
}

/** `url` with `token=` added to its query (unchanged without a token). */
export function withToken(url: string, token: string | null = accessToken()): string {
  if (!token) return url;
  const [path, hash] = url.split("#", 2);
  const joined = `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
  return hash === undefined ? joined : `${joined}#${hash}`;
}

/** `init` with the token header added (unchanged without a token). */
export function withAuth(init: RequestInit = {}, token: string | null = accessToken()): RequestInit {
  if (!token) return init;
  const headers = new Headers(init.headers);
  headers.set(TOKEN_HEADER, token);
  return { ...init, headers };
}

/** `fetch` for the server's API, carrying the token when the page has one. */
export function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, withAuth(init));
}

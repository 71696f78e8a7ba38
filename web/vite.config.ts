/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// The page is served by the Python package: the build goes into src/smartcloset/webapp/, which
// setuptools ships as package data (so a built wheel serves the page without Node).
// `npm run dev` proxies the API and the WebSocket to a running `smart-closet serve`.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../src/smartcloset/webapp",
    emptyOutDir: true,
    target: "es2022",
  },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
  test: {
    environment: "jsdom",
  },
});

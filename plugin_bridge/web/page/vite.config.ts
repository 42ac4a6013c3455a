// Vite build of the browser viewer (output: dist/, served by `python -m plugin_bridge.web`) and Vitest config.
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1024,
    sourcemap: false,
  },
  server: {
    // `npm run dev` during page development: proxy the WebSocket and the avatar to a running gateway on :8080, started
    // with `--allow-host localhost:5173` (the gateway answers 421/403 to pages under names it does not know)
    proxy: {
      "/ws": { target: "ws://127.0.0.1:8080", ws: true },
      "/head.glb": "http://127.0.0.1:8080",
      "/config.json": "http://127.0.0.1:8080",
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});

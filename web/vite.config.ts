/// <reference types="vitest/config" />
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { svelteTesting } from '@testing-library/svelte/vite';
import { defineConfig } from 'vite';

const control = process.env.WARREN_URL ?? 'http://127.0.0.1:8080';

// Two pages: the console (index.html) and the offline API reference
// (docs/index.html, Swagger UI from the swagger-ui-dist package). Both are
// built into dist/, which the warren-console crate embeds.
export default defineConfig({
  plugins: [svelte(), svelteTesting()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Swagger UI is one large bundle by design; it loads only on /docs.
    chunkSizeWarningLimit: 2048,
    rollupOptions: {
      input: { console: 'index.html', docs: 'docs/index.html' },
    },
  },
  server: {
    // `npm run dev` against a running warren-control (WARREN_URL).
    proxy: {
      '/v1': { target: control, ws: true },
      '/openapi.json': control,
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/**/*.test.ts'],
    // CI shares two cores with cargo builds.
    testTimeout: 30_000,
  },
});

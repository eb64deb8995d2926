/**
 * The page (web/): `npm run build:web` builds it into dist-web/ as static files. The
 * library runs in its Web Worker as it is; its Node-only imports are pointed at the
 * stand-ins in src/browser/node/ (they throw if a Node-only path is ever taken; fs reads
 * back the model the page holds), pngjs at one that says the browser decodes PNGs, and
 * onnxruntime-node at onnxruntime-web's wasm-only build, whose .wasm is emitted beside the
 * page. ONNX_LR_WEB_OUT overrides the output folder (the test builds into a temp folder).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const pkg = JSON.parse(readFileSync(here('package.json'), 'utf8')) as { name: string; version: string };
const ISOLATED = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
const NODE_STUBS = ['fs', 'path', 'os', 'crypto', 'module', 'worker_threads', 'zlib', 'child_process', 'util', 'tty'];

export default defineConfig({
  root: here('web'),
  base: './',
  // What require('onnx-lr/package.json') answers in the page (src/browser/node/module.ts): the report's version.
  define: { __ONNX_LR_PACKAGE__: JSON.stringify({ name: pkg.name, version: pkg.version }) },
  resolve: {
    alias: [
      ...NODE_STUBS.map((m) => ({ find: new RegExp(`^(node:)?${m}$`), replacement: here(`src/browser/node/${m}.ts`) })),
      { find: /^onnxruntime-node$/, replacement: here('src/browser/node/onnxruntime.ts') },
      { find: /^pngjs$/, replacement: here('src/browser/node/pngjs.ts') },
      { find: /^onnxruntime-web$/, replacement: 'onnxruntime-web/wasm' },
    ],
  },
  worker: { format: 'es' },
  // Cross-origin isolated (`npm run web`, and `vite` while developing): SharedArrayBuffer is
  // there, so ORT Web can run threads and the factorizations' GEMM worker, and the worker's
  // performance.now() is fine-grained (the latency figures).
  preview: { headers: ISOLATED },
  server: { headers: ISOLATED },
  build: {
    outDir: process.env.ONNX_LR_WEB_OUT ?? here('dist-web'),
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      // session.ts imports onnxruntime-web lazily for Node's sake; in the page it is loaded anyway.
      onwarn(w, warn) { if (w.code !== 'INEFFECTIVE_DYNAMIC_IMPORT') warn(w); },
    },
  },
});

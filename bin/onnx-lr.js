#!/usr/bin/env node
// Runs the compiled CLI (built by `npm run build`, which `npm install` runs via `prepare`).
import { main } from '../dist/src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => { process.stderr.write(`onnx-lr: internal error: ${e?.message ?? e}\n`); process.exitCode = 2; },
);

#!/usr/bin/env node
// Runs the compiled CLI (built by `npm run build`, which `npm install` runs via `prepare`).
// This process supervises a worker (this same script) that does the work, so that a crash
// or a memory bomb in ONNX Runtime ends in a one-line error: see src/cli/supervise.ts.
import { runSupervised } from '../dist/src/cli/supervise.js';

const work = async (argv, stderr) => {
  const { main, stdio } = await import('../dist/src/cli/main.js');
  return main(argv, stdio(stderr));
};

runSupervised(process.argv.slice(2), work).then(
  (code) => { process.exitCode = code; },
  (e) => { process.stderr.write(`onnx-lr: internal error: ${e?.message ?? e}\n`); process.exitCode = 2; },
);

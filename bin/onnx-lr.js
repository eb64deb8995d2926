#!/usr/bin/env node
// The command line. An installed package runs its compiled code (dist/, built by `npm pack`'s
// prepack); a checkout, where src/ sits beside this file, runs the sources through tsx (a
// dev dependency), so a clone needs no build step and never runs a stale build.
// This process supervises a worker (this same script) that does the work, so that a crash
// or a memory bomb in ONNX Runtime ends in a one-line error: see src/cli/supervise.ts.
import { existsSync } from 'node:fs';

const fromSource = existsSync(new URL('../src/cli/main.ts', import.meta.url));

async function entry() {
  if (fromSource) {
    try {
      const { register } = await import('tsx/esm/api');
      register();
    } catch {
      if (!existsSync(new URL('../dist/src/cli/main.js', import.meta.url))) {
        throw new Error('this checkout has neither tsx (run npm install) nor a build (run npm run build)');
      }
      return { supervise: '../dist/src/cli/supervise.js', main: '../dist/src/cli/main.js' };
    }
    return { supervise: '../src/cli/supervise.ts', main: '../src/cli/main.ts' };
  }
  return { supervise: '../dist/src/cli/supervise.js', main: '../dist/src/cli/main.js' };
}

async function run() {
  const files = await entry();
  const { runSupervised } = await import(files.supervise);
  const work = async (argv, stderr) => {
    const { main, stdio } = await import(files.main);
    return main(argv, stdio(stderr));
  };
  return runSupervised(process.argv.slice(2), work);
}

run().then(
  (code) => { process.exitCode = code; },
  (e) => { process.stderr.write(`onnx-lr: internal error: ${e?.message ?? e}\n`); process.exitCode = 2; },
);

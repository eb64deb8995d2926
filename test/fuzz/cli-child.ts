/**
 * `node --import tsx test/fuzz/cli-child.ts ARGS…`: the CLI from source as bin/onnx-lr.js
 * runs it (a supervisor and its worker), for tests that need separate processes.
 *
 * ONNX_LR_TEST_WORKER swaps the worker's work, for supervisor tests that need a worker in
 * a known state: `hang` prints "worker ready PID" to stderr and waits forever (`hang-deaf`
 * also ignores SIGINT and SIGTERM, saying "worker got SIG…"); `abort` calls process.abort();
 * `kill` SIGKILLs itself (`workdir-kill` after making a working folder with a file in it,
 * as optimize --compute float32 does); `native` writes a coloured line to its own fd 2 and exits 0.
 */
import type { Work } from '../../src/cli/supervise.js';
import { runSupervised } from '../../src/cli/supervise.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeWorkDir } from '../../src/util/temp-files.js';

const run: Work = async (argv, stderr) => {
  const { main, stdio } = await import('../../src/cli/main.js');
  return main(argv, stdio(stderr));
};

const testWorker = (mode: string): Work => async (_argv, stderr) => {
  if (mode === 'abort') process.abort();
  if (mode === 'kill') process.kill(process.pid, 'SIGKILL');
  if (mode === 'workdir-kill') {
    writeFileSync(path.join(makeWorkDir().dir, 'in.f32.onnx'), 'a copy');
    process.kill(process.pid, 'SIGKILL');
  }
  if (mode === 'native') { process.stderr.write('native \x1b[0;93mwarning\x1b[m\n'); return 0; }
  if (mode === 'hang-deaf') for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => { stderr.write(`worker got ${s}\n`); });
  stderr.write(`worker ready ${process.pid}\n`);
  return new Promise<number>(() => { setInterval(() => {}, 60_000); });
};

const mode = process.env.ONNX_LR_TEST_WORKER;
process.exitCode = await runSupervised(process.argv.slice(2), mode ? testWorker(mode) : run);

/**
 * The factorizations the passes run, with their products in JS vs in ORT through the
 * synchronous worker engine (src/linalg/ort-gemm-sync.ts), measured in one run on the
 * same inputs. Not a test: `npm run bench:factor` (`-- --quick` for the smaller cases only).
 * Sizes are ISNet's heaviest convs at the ranks a rank ratio of 0.3 gives; HOOI runs a
 * fixed number of sweeps so both sides do the same work. Medians over repeats. The
 * kernels are random, so their spectra are flat at the truncation: there, rounding alone
 * moves the kept subspace, and the two sides' errors agree to ~1e-4, not to 1e-14 as
 * on decaying spectra (test/linalg/ort-gemm-sync.test.ts).
 */
import { loadavg } from 'node:os';
import { cpAlsSync } from '../src/linalg/cp-als.js';
import type { SyncGemm } from '../src/linalg/engine.js';
import { createSyncOrtGemm } from '../src/linalg/ort-gemm-sync.js';
import { tucker2Sync } from '../src/linalg/tucker2.js';
import { createRng } from '../src/util/rng.js';

const quick = process.argv.includes('--quick');

interface Case { name: string; repeats: number; run(gemm?: SyncGemm): number }

function tuckerCase(T: number, S: number, r1: number, r2: number, repeats: number): Case {
  const rng = createRng(T + S);
  const data = Float64Array.from({ length: T * S * 9 }, () => rng.normal());
  return {
    name: `Tucker-2 ${T}x${S}x3x3 at (${r1}, ${r2}), 3 HOOI sweeps`, repeats,
    run: (gemm) => tucker2Sync({ data, shape: [T, S, 3, 3] }, [r1, r2], { gemm, maxIter: 3, tol: -1, svd: { seed: 1 } }).relError,
  };
}

function cpCase(T: number, S: number, rank: number, repeats: number): Case {
  const rng = createRng(T * S);
  const data = Float64Array.from({ length: T * S * 9 }, () => rng.normal());
  return {
    name: `CP-ALS ${T}x${S}x9 at rank ${rank}, 5 sweeps`, repeats,
    run: (gemm) => cpAlsSync({ data, shape: [T, S, 9] }, rank, { gemm, maxIter: 5, tol: -1, seed: 1 }).relError,
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function time(c: Case, gemm?: SyncGemm): { s: number; err: number } {
  const ts: number[] = [];
  let err = NaN;
  for (let i = 0; i < c.repeats; i++) {
    const t0 = performance.now();
    err = c.run(gemm);
    ts.push((performance.now() - t0) / 1000);
  }
  return { s: median(ts), err };
}

const cases = [
  tuckerCase(128, 512, 184, 46, 3),
  tuckerCase(256, 256, 114, 114, 3),
  cpCase(64, 128, 108, 3),
  ...(quick ? [] : [tuckerCase(512, 1024, 436, 218, 1)]),
];
const gemm = await createSyncOrtGemm();
console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ORT side: ${gemm.name}`);
console.log('case'.padEnd(52), 'JS s'.padStart(8), 'ORT s'.padStart(8), 'speed-up'.padStart(9), ' rel. error JS / ORT');
try {
  for (const c of cases) {
    const js = time(c);
    const ort = time(c, gemm);
    console.log(c.name.padEnd(52), js.s.toFixed(2).padStart(8), ort.s.toFixed(2).padStart(8), `${(js.s / ort.s).toFixed(1)}x`.padStart(9), ` ${js.err.toPrecision(6)} / ${ort.err.toPrecision(6)}${c.repeats > 1 ? '' : '  (1 run)'}`);
  }
} finally {
  await gemm.dispose();
}

/**
 * The factorizations the passes run, with their products in JS vs in ORT through the
 * synchronous worker engine (src/linalg/ort-gemm-sync.ts), on the same inputs.
 * Not a test: `npm run bench:factor` (`-- --quick` for the smaller cases only,
 * `-- --repeats=N` to change the number of timed runs of each side, default 3).
 * Sizes are ISNet's heaviest convs at the ranks a rank ratio of 0.3 gives; HOOI runs a
 * fixed number of sweeps so both sides do the same work. The two sides are timed
 * interleaved (JS, ORT, ORT, JS, …) after one warm-up run of each side on the smallest
 * case of each kind (JIT, ORT sessions), and each is reported as the median of its runs
 * with their spread (min–max); the speed-up is the ratio of the medians. The kernels are
 * random, so their spectra are flat at the truncation: there, rounding alone moves the
 * kept subspace, and the two sides' errors agree to ~1e-4, not to 1e-14 as on decaying
 * spectra (test/linalg/ort-gemm-sync.test.ts).
 */
import { cpAlsSync } from '../src/linalg/cp-als.js';
import type { SyncGemm } from '../src/linalg/engine.js';
import { createSyncOrtGemm } from '../src/linalg/ort-gemm-sync.js';
import { tucker2Sync } from '../src/linalg/tucker2.js';
import { createRng } from '../src/util/rng.js';
import { describe, flag, interleaved, intOption, loadLine } from './bench-util.js';

const argv = process.argv.slice(2);
const quick = flag(argv, 'quick');
const REPEATS = intOption(argv, 'repeats', 3, 'bench-factor');

interface Case { name: string; run(gemm?: SyncGemm): number }

function tuckerCase(T: number, S: number, r1: number, r2: number): Case {
  const rng = createRng(T + S);
  const data = Float64Array.from({ length: T * S * 9 }, () => rng.normal());
  return {
    name: `Tucker-2 ${T}x${S}x3x3 at (${r1}, ${r2}), 3 HOOI sweeps`,
    run: (gemm) => tucker2Sync({ data, shape: [T, S, 3, 3] }, [r1, r2], { gemm, maxIter: 3, tol: -1, svd: { seed: 1 } }).relError,
  };
}

function cpCase(T: number, S: number, rank: number): Case {
  const rng = createRng(T * S);
  const data = Float64Array.from({ length: T * S * 9 }, () => rng.normal());
  return {
    name: `CP-ALS ${T}x${S}x9 at rank ${rank}, 5 sweeps`,
    run: (gemm) => cpAlsSync({ data, shape: [T, S, 9] }, rank, { gemm, maxIter: 5, tol: -1, seed: 1 }).relError,
  };
}

const cases = [
  tuckerCase(128, 512, 184, 46),
  tuckerCase(256, 256, 114, 114),
  cpCase(64, 128, 108),
  ...(quick ? [] : [tuckerCase(512, 1024, 436, 218)]),
];
const gemm = await createSyncOrtGemm();
console.log(`load average ${loadLine()}; ORT side: ${gemm.name}; ${REPEATS} interleaved run(s) per side, median (min–max) in seconds`);
console.log('case'.padEnd(52), 'JS s'.padStart(18), 'ORT s'.padStart(18), 'speed-up'.padStart(9), ' rel. error JS / ORT');
try {
  // Warm-up, untimed: the first Tucker-2 and the CP-ALS case once on each side.
  for (const c of [cases[0]!, cases[2]!]) { c.run(); c.run(gemm); }
  for (const c of cases) {
    const [js, ort] = await interleaved([() => c.run(), () => c.run(gemm)], REPEATS);
    console.log(c.name.padEnd(52), describe(js!.timing).padStart(18), describe(ort!.timing).padStart(18),
      `${(js!.timing.median / ort!.timing.median).toFixed(1)}x`.padStart(9), ` ${js!.last.toPrecision(6)} / ${ort!.last.toPrecision(6)}`);
  }
} finally {
  await gemm.dispose();
}
console.log(`load average at end ${loadLine()}`);

/**
 * npm run bench:stats [-- --json]
 * Calibration statistics of one conv input: the input-channel Gram and the im2col patch
 * Gram of a 3x3 conv (stride 1, pads 1), accumulated by the exact fp64 JS kernels and
 * with the products on the ORT GEMM engine, in the same run on the same tensor. Medians
 * over repeats; rel_diff is the largest difference between the two Grams relative to the
 * largest entry. Machines are shared: read the ratio, not the seconds.
 */
import { loadavg } from 'node:os';
import { accumulateConvChannelsOn, accumulatePatchesOn } from '../src/calib/accumulate-engine.js';
import { accumulateConvChannels, accumulatePatches, patchDimOf, resolvePatchGeometry } from '../src/calib/accumulate.js';
import { createOrtGemmEngine } from '../src/linalg/ort-gemm.js';
import { table } from '../src/report/format.js';
import { createRng } from '../src/util/rng.js';

const json = process.argv.includes('--json');
const REPEATS = 3;

async function median(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const t0 = performance.now();
    await fn();
    t.push((performance.now() - t0) / 1000);
  }
  return t.sort((a, b) => a - b)[Math.floor(REPEATS / 2)]!;
}

function relDiff(a: Float64Array, b: Float64Array): number {
  let scale = 0, d = 0;
  for (let i = 0; i < a.length; i++) { scale = Math.max(scale, Math.abs(b[i]!)); d = Math.max(d, Math.abs(a[i]! - b[i]!)); }
  return d / (scale || 1);
}

const engine = createOrtGemmEngine();
const rows: Record<string, string | number>[] = [];
for (const [C, H] of [[64, 128], [128, 128], [256, 64]] as const) {
  const rng = createRng(C + H);
  // ReLU-like activations: non-negative, as most conv inputs are.
  const x = Float32Array.from({ length: C * H * H }, () => Math.max(0, rng.normal()));
  const geo = resolvePatchGeometry({ kernel: [3, 3], strides: [1, 1], dilations: [1, 1], pads: [1, 1, 1, 1], autoPad: 'NOTSET', S: C, group: 1 }, [1, C, H, H]);
  if (typeof geo === 'string') throw new Error(geo);
  const D = patchDimOf(geo);
  for (const kind of ['channels', 'patches'] as const) {
    const dim = kind === 'channels' ? C : D;
    const js = new Float64Array(dim * dim), on = new Float64Array(dim * dim);
    const runJs = () => { js.fill(0); return kind === 'channels' ? accumulateConvChannels(js, x, 1, C, H * H, 1) : accumulatePatches(js, x, geo); };
    const runOn = () => { on.fill(0); return kind === 'channels' ? accumulateConvChannelsOn(engine, on, x, 1, C, H * H, 1) : accumulatePatchesOn(engine, on, x, geo); };
    const jsS = await median(runJs);
    const onS = await median(runOn);
    rows.push({
      case: `${kind} Gram, ${C} ch @ ${H}x${H}${kind === 'patches' ? ` (D = ${D})` : ''}`,
      js_s: +jsS.toFixed(3), engine_s: +onS.toFixed(3), speedup: +(jsS / onS).toFixed(1), rel_diff: +relDiff(on, js).toExponential(1),
    });
  }
}
await engine.dispose();
if (json) for (const r of rows) console.log(JSON.stringify(r));
else {
  console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; medians of ${REPEATS}`);
  console.log(table(['case', 'JS (s)', 'ORT engine (s)', 'speed-up', 'rel. diff'], rows.map((r) => [r.case, r.js_s, r.engine_s, `${r.speedup}x`, r.rel_diff].map(String))));
}

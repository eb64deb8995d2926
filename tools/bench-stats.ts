/**
 * npm run bench:stats [-- --json] [-- --quick] [-- --repeats=N]
 * Calibration statistics of one conv input: the input-channel Gram and the im2col patch
 * Gram of a 3x3 conv (stride 1, pads 1), accumulated by the exact fp64 JS kernels and
 * with the products on the ORT GEMM engine, in the same run on the same tensor. After
 * one untimed warm-up run of each side (JIT, ORT sessions), the two sides are timed
 * interleaved (JS, ORT, ORT, JS, …; default 5 runs each) and reported as medians with
 * their spread (min–max); the speed-up is the ratio of the medians. rel_diff is the
 * largest difference between the two Grams relative to the largest entry. Machines are
 * shared: read the ratio, not the seconds. `--quick` runs the smallest size only.
 */
import { accumulateConvChannelsOn, accumulatePatchesOn } from '../src/calib/accumulate-engine.js';
import { accumulateConvChannels, accumulatePatches } from '../src/calib/accumulate.js';
import { patchDimOf, resolvePatchGeometry } from '../src/calib/patch-geometry.js';
import { createOrtGemmEngine } from '../src/linalg/ort-gemm.js';
import { table } from '../src/report/format.js';
import { createRng } from '../src/util/rng.js';
import { describe, flag, interleaved, intOption, loadLine } from './bench-util.js';

const argv = process.argv.slice(2);
const json = flag(argv, 'json');
const quick = flag(argv, 'quick');
const REPEATS = intOption(argv, 'repeats', 5, 'bench-stats');

function relDiff(a: Float64Array, b: Float64Array): number {
  let scale = 0, d = 0;
  for (let i = 0; i < a.length; i++) { scale = Math.max(scale, Math.abs(b[i]!)); d = Math.max(d, Math.abs(a[i]! - b[i]!)); }
  return d / (scale || 1);
}

const engine = createOrtGemmEngine();
const rows: Record<string, string | number>[] = [];
const sizes: (readonly [number, number])[] = quick ? [[64, 64]] : [[64, 128], [128, 128], [256, 64]];
for (const [C, H] of sizes) {
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
    await runJs(); await runOn(); // warm-up, untimed
    const [jsT, onT] = (await interleaved([runJs, runOn], REPEATS)).map((r) => r.timing);
    rows.push({
      case: `${kind} Gram, ${C} ch @ ${H}x${H}${kind === 'patches' ? ` (D = ${D})` : ''}`,
      js_s: +jsT!.median.toFixed(3), js_spread: `${jsT!.min.toFixed(3)}–${jsT!.max.toFixed(3)}`,
      engine_s: +onT!.median.toFixed(3), engine_spread: `${onT!.min.toFixed(3)}–${onT!.max.toFixed(3)}`,
      speedup: +(jsT!.median / onT!.median).toFixed(1), rel_diff: +relDiff(on, js).toExponential(1),
      js: describe(jsT!, 3), engine: describe(onT!, 3),
    });
  }
}
await engine.dispose();
if (json) for (const r of rows) { const { js: _js, engine: _engine, ...rest } = r; console.log(JSON.stringify({ ...rest, repeats: REPEATS })); }
else {
  console.log(`load average ${loadLine()}; ${REPEATS} interleaved runs per side after a warm-up, median (min–max) in seconds`);
  console.log(table(['case', 'JS (s)', 'ORT engine (s)', 'speed-up', 'rel. diff'], rows.map((r) => [r.case, r.js, r.engine, `${Number(r.speedup).toFixed(1)}x`, r.rel_diff].map(String))));
}

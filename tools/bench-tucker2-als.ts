/**
 * npm run bench:tucker2-als [-- --ratio=0.5 --sweeps=3]
 * Does fitting every Tucker-2 factor on the data objective pay? Issue 18 asks for all
 * factors fitted by ALS on the patch statistics; the data-aware and anchored Tucker-2 fits
 * (src/linalg/tucker2-conv.ts) take the first factor from the channel-level (whitened) fit
 * and then the core and last factor jointly, exactly, by reduced-rank regression on the
 * patch covariances. This bench starts from that fit on each dense k×k conv of PP-OCRv4 det
 * (4 seeded N(0,1) inputs at 320², every rank × ratio) and alternates:
 *   A-step: the first factor A [r1, s] minimising E‖W·p − M·(A ⊗ I_K)·p‖² for the fixed
 *           M = last·core [t, r1·K] (normal equations Σ_k [Mᵀ·M·Ã·Ĉ]_(b,k),(c,k) = Σ_k
 *           [Mᵀ·W·Ĉ]_(b,k),(c,k), solved by conjugate gradients: the system is (r1·s)²);
 *   core and last factor by the reduced-rank regression as in the fit.
 * It prints the data error (E‖W·p − Ŵ·p‖ / E‖W·p‖ on the centered patch covariance) after
 * each half-step. The statistics are the original model's (x̂ = x); the anchored objective
 * has the same structure with X̂ᵀX̂ and X̂ᵀX in place of the one covariance.
 * The A-step lives here, not in src/linalg, because it did not pay (docs/results.md).
 */
import { convTucker2 } from '../passes/conv-tucker2.js';
import { reducedRankFromMoments } from '../src/linalg/anchored.js';
import { conjugateGradient } from '../src/linalg/cg.js';
import { gemm } from '../src/linalg/gemm.js';
import { transpose, type Matrix } from '../src/linalg/matrix.js';
import { diagonalSum } from '../src/linalg/spatial-svd-als.js';
import { applyFirst, tucker2Conv } from '../src/linalg/tucker2-conv.js';
import { table } from '../src/report/format.js';
import { ANCHOR_PATCH_DAMP, anchoredChannelWhitenings, anchoredPatches } from '../src/rewrite/conv-stats.js';
import { isSkip } from '../src/rewrite/skip.js';
import { detConvsWithStats, patchObjective } from './als-bench.js';
import { fractionOption, intOption } from './bench-util.js';

const argv = process.argv.slice(2);
const ratio = fractionOption(argv, 'ratio', 0.5, 'bench:tucker2-als');
const sweeps = intOption(argv, 'sweeps', 3, 'bench:tucker2-als');
const CG_ITERATIONS = 25;

/** Ŵ = M·Ã [t, s·K] for M [t, r·K]. */
function chainWeight(m: Matrix, a: Matrix, K: number): Matrix {
  const { rows: r, cols: s } = a;
  const out = new Float64Array(m.rows * s * K);
  for (let i = 0; i < m.rows; i++) for (let b = 0; b < r; b++) for (let c = 0; c < s; c++) {
    const v = a.data[b * s + c]!;
    for (let k = 0; k < K; k++) out[i * s * K + c * K + k] += m.data[i * r * K + b * K + k]! * v;
  }
  return { rows: m.rows, cols: s * K, data: out };
}

/** The first factor for fixed M by conjugate gradients on its normal equations, from `a0`. */
function firstFactorStep(m: Matrix, a0: Matrix, cHat: Matrix, wx: Matrix, K: number): Matrix {
  const { rows: r, cols: s } = a0;
  const n = gemm(m, m, { transA: true });
  const op = (a: Float64Array): ArrayLike<number> => diagonalSum(gemm(n, transpose(applyFirst({ rows: r, cols: s, data: a }, cHat, K, undefined))), r, s, K).data;
  const rhs = diagonalSum(gemm(m, wx, { transA: true }), r, s, K).data;
  return { rows: r, cols: s, data: conjugateGradient(op, rhs, a0.data, { iterations: CG_ITERATIONS }) };
}

const rows: string[][] = [];
for (const { layer, cx } of await detConvsWithStats('onnx-lr-bench-als-')) {
  const m = convTucker2.match(layer, cx);
  if (isSkip(m) || m.geo.group !== 1) continue;
  const { T, S, kernelSize: K } = m.geo;
  const D = S * K;
  const r1 = Math.max(1, Math.round(S * ratio));
  const r2 = Math.max(1, Math.round(T * ratio));
  const patch = anchoredPatches(cx, layer.name, m.geo)![0]!;
  const fit = tucker2Conv({ data: m.w, shape: [T, S, K], groups: 1 }, [r1, r2], {
    anchor: { channel: anchoredChannelWhitenings(cx, layer.name, m.geo)!, patch: [patch], patchDamp: ANCHOR_PATCH_DAMP },
  });
  const { cHat, wx, error } = patchObjective(m.w, T, D, patch);
  const errorOf = (mm: Matrix, a: Matrix): number => error(chainWeight(mm, a, K));
  let a: Matrix = { rows: r1, cols: S, data: Float64Array.from(fit.first) };
  let mm = gemm({ rows: T, cols: r2, data: Float64Array.from(fit.last) }, { rows: r2, cols: r1 * K, data: Float64Array.from(fit.core) });
  const errors = [errorOf(mm, a)];
  const t0 = performance.now();
  for (let k = 0; k < sweeps; k++) {
    a = firstFactorStep(mm, a, cHat, wx, K);
    errors.push(errorOf(mm, a));
    const z = applyFirst(a, transpose(applyFirst(a, cHat, K, undefined)), K, undefined);
    const rr = reducedRankFromMoments(z, applyFirst(a, wx, K, undefined), r2);
    mm = gemm(rr.b, rr.g);
    errors.push(errorOf(mm, a));
  }
  const last = errors[errors.length - 1]!;
  rows.push([layer.name, `${T}x${S}x${m.geo.kernel.join('x')}`, `${r1}, ${r2}`, errors[0]!.toFixed(4), errors.slice(1).map((e) => e.toFixed(4)).join(' '),
    `${((1 - last / errors[0]!) * 100).toFixed(2)}%`, ((performance.now() - t0) / 1000).toFixed(1)]);
  process.stderr.write(`done ${layer.name}\n`);
}
process.stdout.write(`Tucker-2 at rank ratio ${ratio} on PP-OCRv4 det's dense k×k convs: data error of the fit, then after each A-step and core/last step (${sweeps} sweeps)\n\n`);
process.stdout.write(table(['layer', 'kernel', 'ranks', 'fit', 'ALS half-steps', 'lower by', 'ALS s'], rows) + '\n');

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
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REAL_MODELS } from '../models/real.js';
import { convTucker2 } from '../passes/conv-tucker2.js';
import { loadCalibration } from '../src/calib/load.js';
import { collectStats } from '../src/calib/stats.js';
import { Model } from '../src/graph/graph.js';
import { findLayers } from '../src/graph/layers.js';
import { anchoredError, dampingOf, plusDiagonal, reducedRankFromMoments } from '../src/linalg/anchored.js';
import { gemm } from '../src/linalg/gemm.js';
import { transpose, type Matrix } from '../src/linalg/matrix.js';
import { diagonalSum } from '../src/linalg/spatial-svd-als.js';
import { applyFirst, tucker2Conv } from '../src/linalg/tucker2-conv.js';
import { decodeModel } from '../src/onnx/codec.js';
import { table } from '../src/report/format.js';
import { ANCHOR_PATCH_DAMP, anchoredChannelWhitenings, anchoredPatches } from '../src/rewrite/conv-stats.js';
import type { LayerInputStats, PassContext } from '../src/rewrite/pass.js';
import { isSkip } from '../src/rewrite/skip.js';
import { createRng } from '../src/util/rng.js';
import { randomNpy } from './bench-data.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: number): number => Number(argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt);
const ratio = opt('ratio', 0.5);
const sweeps = opt('sweeps', 3);
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

const dot = (a: Float64Array, b: Float64Array): number => a.reduce((acc, v, i) => acc + v * b[i]!, 0);
const axpy = (x: Float64Array, alpha: number, y: Float64Array): Float64Array => x.map((v, i) => v + alpha * y[i]!);

/** The first factor for fixed M by conjugate gradients on its normal equations, from `a0`. */
function firstFactorStep(m: Matrix, a0: Matrix, cHat: Matrix, wx: Matrix, K: number): Matrix {
  const { rows: r, cols: s } = a0;
  const n = gemm(m, m, { transA: true });
  const op = (a: Float64Array): Float64Array => Float64Array.from(diagonalSum(gemm(n, transpose(applyFirst({ rows: r, cols: s, data: a }, cHat, K, undefined))), r, s, K).data);
  const rhs = Float64Array.from(diagonalSum(gemm(m, wx, { transA: true }), r, s, K).data);
  let x: Float64Array = Float64Array.from(a0.data);
  let res: Float64Array = axpy(rhs, -1, op(x));
  let dir: Float64Array = Float64Array.from(res);
  let rs = dot(res, res);
  const rs0 = rs;
  for (let it = 0; it < CG_ITERATIONS && rs > 1e-14 * rs0; it++) {
    const q = op(dir);
    const alpha = rs / dot(dir, q);
    x = axpy(x, alpha, dir);
    res = axpy(res, -alpha, q);
    const next = dot(res, res);
    dir = axpy(res, next / rs, dir);
    rs = next;
  }
  return { rows: r, cols: s, data: x };
}

const model = new Model(decodeModel(new Uint8Array(readFileSync(REAL_MODELS.det.path))));
const dims = [4, ...REAL_MODELS.det.shapes[0]!.split(':')[1]!.split('x').map(Number).slice(1)];
const calib = loadCalibration(randomNpy(mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-als-')), 'det.npy', dims, 5), {
  inputs: [{ name: 'x', isTensor: true, type: 'float32', shape: [1, ...dims.slice(1)] }],
});
if (!calib.ok) throw calib.error;
const layers = findLayers(model);
const st = await collectStats(model, layers, calib.value);
if (!st.ok) throw st.error;

const rows: string[][] = [];
for (const layer of layers) {
  const s0 = st.value.stats.get(layer.name);
  if (layer.node.opType !== 'Conv' || !s0?.patchGram || !s0.mean) continue;
  // x̂ = x: the anchored fit's code path on the original's statistics is the data-aware fit.
  const self: LayerInputStats = { ...s0, anchor: { gram: s0.gram, cross: s0.gram, mean: s0.mean, patchGram: s0.patchGram, patchCross: s0.patchGram, patchMean: s0.patchMean } };
  const cx = { model, stats: new Map([[layer.name, self]]), rng: createRng(0), shared: new Map() } as PassContext;
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
  const w: Matrix = { rows: T, cols: D, data: Float64Array.from(m.w) };
  const delta = dampingOf(patch.gramHat, D, ANCHOR_PATCH_DAMP);
  const cHat: Matrix = { rows: D, cols: D, data: plusDiagonal(patch.gramHat, D, delta) };
  const wx = gemm(w, { rows: D, cols: D, data: plusDiagonal(patch.cross, D, delta) }, { transB: true });
  const errorOf = (mm: Matrix, a: Matrix): number => {
    const e = anchoredError(w, chainWeight(mm, a, K), patch);
    return Math.sqrt(e.num / e.den);
  };
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

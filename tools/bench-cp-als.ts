/**
 * npm run bench:cp-als [-- --ratio=0.5 --sweeps=3 --cg=25 --method=cp|cp4]
 * Does fitting every CP factor on the data objective pay? Issue 18 asks for all factors
 * fitted by ALS on the patch statistics. Before session 22 the data-aware and anchored CP
 * fits (src/linalg/cp-conv.ts) ran CP-ALS on the Kronecker-whitened kernel (the patch
 * covariance approximated as L_S·L_Sᵀ ⊗ L_K·L_Kᵀ), then fitted only the last factor
 * exactly on the full patch moments. This bench starts from that fit (`dataSweeps: 0`) on
 * each dense k×k conv of PP-OCRv4 det (the pass's whitening, rank R from the parameter
 * ratio: R·(T + S + K) = ratio·T·S·K) and runs the sweeps of src/linalg/cp-data-als.ts on
 * the exact patch objective (F and Dp by preconditioned CG, A exactly), printing the data
 * error after each sweep, the same error on statistics of 4 held-out inputs, and the CP's
 * sensitivity ratio (a fit on the data may drift towards cancelling terms). It paid
 * (docs/results.md), so cpConv now runs the sweeps itself, 4 of 8 CG iterations each.
 * `--method=cp4`: the same for the 4-way CP chain (1x1 → kh×1 → 1×kw → 1x1; conv-cp4 fits
 * it on the kernel whitened mode by mode, then its last factor), its four factors swept.
 */
import { ALS, convCp } from '../passes/conv-cp.js';
import { convCp4, startFit } from '../passes/conv-cp4.js';
import { cpNdSensitivity } from '../src/linalg/cpn-conv.js';
import { fitThroughInputMap } from '../src/linalg/anchored.js';
import { chainSensitivity, cpConv } from '../src/linalg/cp-conv.js';
import { chainDataSweeps, chainInput, chainMap } from '../src/linalg/cp-data-als.js';
import { gemm } from '../src/linalg/gemm.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { table } from '../src/report/format.js';
import { ANCHOR_PATCH_DAMP, anchoredPatches, kroneckerWhitening, MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { isSkip } from '../src/rewrite/skip.js';
import { detConvsWithStats, patchObjective } from './als-bench.js';
import { fractionOption, intOption, stringOption } from './bench-util.js';

const argv = process.argv.slice(2);
const ratio = fractionOption(argv, 'ratio', 0.5, 'bench:cp-als');
const sweeps = intOption(argv, 'sweeps', 3, 'bench:cp-als');
const cgIterations = intOption(argv, 'cg', 25, 'bench:cp-als');
const method = stringOption(argv, 'method', 'cp', ['cp', 'cp4'] as const, 'bench:cp-als');

const rows: string[][] = [];
const held = new Map((await detConvsWithStats('onnx-lr-bench-cp-als-held-', 6)).map((c) => [c.layer.name, c.cx]));
for (const { layer, cx } of await detConvsWithStats('onnx-lr-bench-cp-als-')) {
  if (method === 'cp4') {
    const row = cp4Row(layer, cx);
    if (row) rows.push(row);
    continue;
  }
  const m = convCp.match(layer, cx);
  if (isSkip(m) || m.geo.group !== 1) continue;
  const { T, S, kernelSize: K } = m.geo;
  const D = S * K;
  const R = Math.max(1, Math.min(Math.round((ratio * T * S * K) / (T + S + K)), Math.floor((T * S * K) / Math.max(T, S, K))));
  const patch = anchoredPatches(cx, layer.name, m.geo)![0]!;
  // The pass's whitening (factorizeCp): from the patch covariance when it is well determined.
  const whitening = m.samples >= MIN_ROWS_PER_DIM * D ? kroneckerWhitening(S, K, patch.gramHat) : kroneckerWhitening(S, K, undefined, m.channelGram?.[0]);
  // dataSweeps 0: the fit as it was before the sweeps moved into cp-conv.ts, to start from.
  const fit = cpConv({ data: m.w, shape: [T, S, K] }, R, { rng: cx.rng, maxIter: ALS.maxIter, tol: ALS.tol, whitening, anchor: { patch, damp: ANCHOR_PATCH_DAMP }, dataSweeps: 0 });
  if (!(fit.relError >= 0)) { process.stderr.write(`skipped ${layer.name}: CP fit failed\n`); continue; }
  const { w, cHat, wx, error } = patchObjective(m.w, T, D, patch);
  const heldPatch = anchoredPatches(held.get(layer.name)!, layer.name, m.geo)![0]!;
  const heldError = patchObjective(m.w, T, D, heldPatch).error;
  const R2 = fit.rank;
  const wHat = (f: { first: ArrayLike<number>; depth: ArrayLike<number>; last: ArrayLike<number> }): Matrix =>
    gemm({ rows: T, cols: R2, data: Float64Array.from(f.last) }, chainInput(f.first, f.depth, R2, S, K));
  const cp3 = (f: { modes: Float64Array[]; last: Float64Array }) => ({ first: f.modes[0]!, depth: f.modes[1]!, last: f.last });
  const errors = [error(wHat(fit))];
  const t0 = performance.now();
  const out = chainDataSweeps({ modes: [Float64Array.from(fit.first), Float64Array.from(fit.depth)], last: Float64Array.from(fit.last) }, T, [S, K], { cHat, y: wx },
    (h) => fitThroughInputMap(w, h, patch.gramHat, patch.cross, ANCHOR_PATCH_DAMP), { sweeps, cgIterations, onSweep: (f) => errors.push(error(wHat(cp3(f)))) });
  const { first: f, depth: dp, last: a } = cp3(out.factors);
  const seconds = (performance.now() - t0) / 1000;
  const sens = (first: ArrayLike<number>, depth: ArrayLike<number>, last: ArrayLike<number>): string =>
    chainSensitivity(Float32Array.from(first), Float32Array.from(depth), Float32Array.from(last), T, S, K, fit.rank).ratio.toFixed(2);
  const last = errors[errors.length - 1]!;
  rows.push([layer.name, `${T}x${S}x${m.geo.kernel.join('x')}`, String(fit.rank), errors[0]!.toFixed(4), errors.slice(1).map((e) => e.toFixed(4)).join(' '),
    `${((1 - last / errors[0]!) * 100).toFixed(2)}%`, `${heldError(wHat(fit)).toFixed(4)} → ${heldError(wHat(cp3(out.factors))).toFixed(4)}`,
    `${sens(fit.first, fit.depth, fit.last)} → ${sens(f, dp, a)}`, seconds.toFixed(1)]);
  process.stderr.write(`done ${layer.name}\n`);
}
/** The 4-way CP as conv-cp4 fits it before its sweeps (whitened mode by mode, last factor anchored), then the sweeps over its four factors. */
function cp4Row(layer: Parameters<typeof convCp4.match>[0], cx: Parameters<typeof convCp4.match>[1]): string[] | undefined {
  const m = convCp4.match(layer, cx);
  if (isSkip(m) || m.geo.group !== 1 || m.geo.spatial !== 2) return undefined;
  const { T, S } = m.geo;
  const [kh, kw] = m.geo.kernel as [number, number];
  const D = S * kh * kw;
  const dims = [S, kh, kw];
  const R = Math.max(1, Math.min(Math.round((ratio * T * D) / (T + S + kh + kw)), Math.floor((T * D) / Math.max(T, S, kh, kw))));
  const patch = anchoredPatches(cx, layer.name, m.geo)![0]!;
  const raw = startFit(m, 0, R, { rng: cx.rng });
  if (!(raw.relError >= 0)) { process.stderr.write(`skipped ${layer.name}: CP-4 fit failed\n`); return undefined; }
  const R2 = raw.rank;
  const modes = [raw.first, ...raw.spatial].map((v) => Float64Array.from(v));
  const { w, cHat, wx, error } = patchObjective(m.w, T, D, patch);
  const heldError = patchObjective(m.w, T, D, anchoredPatches(held.get(layer.name)!, layer.name, m.geo)![0]!).error;
  const lastFit = (h: Matrix): Matrix => fitThroughInputMap(w, h, patch.gramHat, patch.cross, ANCHOR_PATCH_DAMP);
  const start = { modes, last: Float64Array.from(lastFit(chainMap(modes, R2, dims)).data) };
  const wHat = (f: { modes: Float64Array[]; last: Float64Array }): Matrix => gemm({ rows: T, cols: R2, data: f.last }, chainMap(f.modes, R2, dims));
  const errors = [error(wHat(start))];
  const t0 = performance.now();
  const out = chainDataSweeps(start, T, dims, { cHat, y: wx }, lastFit, { sweeps, cgIterations, onSweep: (f) => errors.push(error(wHat(f))) });
  const seconds = (performance.now() - t0) / 1000;
  const sens = (f: { modes: Float64Array[]; last: Float64Array }): string => cpNdSensitivity(f.modes[0]!, f.modes.slice(1), f.last, T, S, [kh, kw], R2).ratio.toFixed(2);
  const last = errors[errors.length - 1]!;
  process.stderr.write(`done ${layer.name}\n`);
  return [layer.name, `${T}x${S}x${kh}x${kw}`, String(R2), errors[0]!.toFixed(4), errors.slice(1).map((e) => e.toFixed(4)).join(' '),
    `${((1 - last / errors[0]!) * 100).toFixed(2)}%`, `${heldError(wHat(start)).toFixed(4)} → ${heldError(wHat(out.factors)).toFixed(4)}`,
    `${sens(start)} → ${sens(out.factors)}`, seconds.toFixed(1)];
}

const what = method === 'cp4' ? '4-way CP (first, kh×1, 1×kw and last factor)' : 'CP (all three factors)';
process.stdout.write(`${what} at parameter ratio ${ratio} on PP-OCRv4 det's dense k×k convs: data error of the fit, then after each ALS sweep over all its factors (${sweeps} sweeps, ${cgIterations} CG iterations per factor step); held out: the same error on statistics of 4 other inputs\n\n`);
process.stdout.write(table(['layer', 'kernel', 'rank', 'fit', 'after each sweep', 'lower by', 'held out', 'sensitivity ratio', 'ALS s'], rows) + '\n');

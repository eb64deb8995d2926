/**
 * Anchored fits through the activation after a conv (linalg/flat-target.ts has the maths).
 *
 * Before: conv fitted to y = W·p + b on the anchored moments, every output entry weighted
 *         alike, though the Relu (or Clip) after it discards the exact value of every entry
 *         in a flat region (82% of them on ISNet's convs).
 * After:  the same pass at the same ranks, refitted to the majorizing target z of the
 *         post-activation error at the current fit's predictions, twice; kept only when
 *         the post-activation error on patches held back from the refit is lower.
 *
 * The target depends on each sample's prediction, so it needs whole patches
 * (calib/patch-samples.ts) besides the moments: the fit objective is a mixture, α of the
 * linear objective on all calibration patches (the anchored moments) and 1 − α of the
 * majorized one on the kept samples, α larger when the samples are few for the patch size
 * (a rank-deficient sample covariance would otherwise be fitted to). The mixture is handed
 * to the pass as ordinary anchored statistics: the sample covariance mixed into Σ x̂·x̂ᵀ,
 * the target covariance lifted into Σ x̂·xᵀ through the weight (W·Xᵀ = T), the target's
 * mean into E[x] (so the pass's bias correction takes it), the original's covariance kept.
 */
import { attrInt } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Model } from '../graph/graph.js';
import { constantOrCastFed, type LayerInfo } from '../graph/layers.js';
import { anchoredError, centered } from '../linalg/anchored.js';
import { product, type SyncGemm } from '../linalg/engine.js';
import { crossCovariance, flatLoss, flatTargets, rowSpaceLift, sampleCovariance, type FlatRegion } from '../linalg/flat-target.js';
import type { Matrix } from '../linalg/matrix.js';
import { readTensorFloat, type ExternalBytes } from '../onnx/tensor.js';
import type { PatchSamples } from '../calib/patch-samples.js';
import { chainWeight, findChain, type Composer } from '../rewrite/merge.js';
import { isSkip, type FactoredLayer, type LayerInputStats } from '../rewrite/pass.js';

export type { FlatRegion };

/** The flat region of the activation after a conv, and which op it is (for the notes). */
export interface Activation extends FlatRegion { op: 'Relu' | 'Clip' }

/** Refits through the activation per layer (the first fit's predictions, then the refit's). */
export const FLAT_REFITS = 2;

/** Every HOLD_BACK-th kept patch is held back from the refit, to judge it. */
const HOLD_BACK = 4;

/** Fewer samples than this (e.g. a conv on pooled vectors, one per feed) judge a refit too noisily: it is not tried. */
export const MIN_SAMPLES = 256;

/** The value of a Clip bound given as an input (opset ≥ 11), or undefined when absent, not constant or not one number. */
function boundInput(layer: LayerInfo, name: string | undefined): number | undefined | 'unknown' {
  if (!name) return undefined;
  const ref = resolveConstant(layer.graph, name);
  if (!ref) return 'unknown';
  try {
    const v = readTensorFloat(ref.tensor);
    return v.length === 1 && Number.isFinite(v[0]!) ? v[0]! : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * The clamping activation a main-graph, ungrouped Conv feeds alone (its output read by one
 * Relu, or one Clip with constant bounds, and not a graph output), or undefined.
 */
export function flatActivationOf(layer: LayerInfo): Activation | undefined {
  if (layer.op !== 'Conv' || layer.subgraphDepth !== 0 || attrInt(layer.node, 'group', 1) !== 1) return undefined;
  const out = layer.node.output[0];
  const g = layer.graph;
  if (!out || g.isGraphOutput(out)) return undefined;
  const readers = g.consumers(out);
  if (readers.length !== 1) return undefined;
  const a = readers[0]!;
  if ((a.domain ?? '') !== '' || a.input[0] !== out || a.input.slice(1).includes(out)) return undefined;
  if (a.opType === 'Relu') return { op: 'Relu', lo: 0 };
  if (a.opType !== 'Clip') return undefined;
  let lo: number | undefined;
  let hi: number | undefined;
  // Before opset 11 the bounds are float attributes (a stored 0 may decode as absent f).
  const attrs = new Map(a.attribute.map((x) => [x.name, x.f ?? 0]));
  if (attrs.has('min') || attrs.has('max')) {
    lo = attrs.get('min');
    hi = attrs.get('max');
  } else {
    const l = boundInput(layer, a.input[1]);
    const h = boundInput(layer, a.input[2]);
    if (l === 'unknown' || h === 'unknown') return undefined;
    lo = l;
    hi = h;
  }
  if (lo === undefined && hi === undefined) return undefined;
  if (lo !== undefined && hi !== undefined && !(lo < hi)) return undefined;
  return { op: 'Clip', lo, hi };
}

/** A conv as a matrix map of its patches: y = W·p + b, W [O, D]. */
export interface PatchMap { w: Matrix; b: Float64Array }

/** A conv's bias [O] (zeros when it has none), or undefined when it is not a constant. */
function biasOf(g: LayerInfo['graph'], name: string | undefined, O: number, external: ExternalBytes | undefined): Float64Array | undefined {
  if (!name) return new Float64Array(O);
  const ref = constantOrCastFed(g, name);
  const b = ref && readTensorFloat(ref.tensor, external);
  return b && b.length === O ? Float64Array.from(b) : undefined;
}

/** A conv layer as a patch map (its weight [O, C·∏k] and bias), read before its rewrite; undefined when it is not one. */
export function convPatchMap(layer: LayerInfo, external: ExternalBytes | undefined): PatchMap | undefined {
  const [O, ...rest] = layer.weightShape;
  const D = rest.reduce((a, b) => a * b, 1);
  const w = readTensorFloat(layer.weight.tensor, external);
  if (!O || w.length !== O * D) return undefined;
  const b = biasOf(layer.graph, layer.node.input[2], O, external);
  return b && { w: { rows: O, cols: D, data: Float64Array.from(w) }, b };
}

/** What a layer's emitted chain computes as a patch map (the pass's compose, the last node's bias), shaped like `orig`; a reason when it cannot be read. */
export function chainPatchMap(model: Model, f: FactoredLayer, pass: Composer, orig: PatchMap, external: ExternalBytes | undefined): PatchMap | string {
  const w = chainWeight(model, f, pass, external);
  if (isSkip(w)) return w.skip;
  const found = findChain(model, f.nodes);
  if (!found || w.length !== orig.w.data.length) return 'the chain does not compose to the layer\'s weight';
  const b = biasOf(found.g, found.chain[found.chain.length - 1]!.input[2], orig.w.rows, external);
  if (!b) return 'the chain\'s bias is not a constant';
  return { w: { rows: orig.w.rows, cols: orig.w.cols, data: Float64Array.from(w) }, b };
}

/** Rows of samples (every HOLD_BACK-th held back: `held`; the others: `fit`). */
function splitRows(n: number): { fit: Int32Array; held: Int32Array } {
  const fit: number[] = [];
  const held: number[] = [];
  for (let i = 0; i < n; i++) (i % HOLD_BACK === HOLD_BACK - 1 ? held : fit).push(i);
  return { fit: Int32Array.from(fit), held: Int32Array.from(held) };
}

function rowsOf(a: Float32Array, dim: number, rows: Int32Array): Matrix {
  const out = new Float64Array(rows.length * dim);
  for (let i = 0; i < rows.length; i++) out.set(a.subarray(rows[i]! * dim, (rows[i]! + 1) * dim), i * dim);
  return { rows: rows.length, cols: dim, data: out };
}

/** P·Wᵀ + b [n, O]. */
function responses(p: Matrix, f: PatchMap, sync?: SyncGemm): Float64Array {
  const y = Float64Array.from(product(p, f.w, { transB: true }, sync).data);
  const O = f.w.rows;
  for (let i = 0; i < y.length; i++) y[i] += f.b[i % O]!;
  return y;
}

/** The post-activation error (relative) of `cur` on inputs `pHat` against the original's responses `y`. */
function postActivationError(y: Float64Array, pHat: Matrix, cur: PatchMap, region: FlatRegion, sync?: SyncGemm): number {
  const { num, den } = flatLoss(y, responses(pHat, cur, sync), region);
  return den > 0 ? Math.sqrt(num / den) : 0;
}

/** Weight of the moments' linear objective in the mixture: more when the samples are few for the patch size. */
export const linearWeight = (dim: number, fitRows: number): number => Math.min(0.5, dim / (2 * Math.max(1, fitRows)));

/**
 * The moments a conv's fits read, as raw sums over n vectors: its patch moments (k×k
 * kernels) or, for a 1x1 conv (no patch statistics), its channel moments.
 */
interface Moments {
  level: 'patch' | 'channel';
  n: number;
  gram: Float64Array;
  mean: Float64Array;
  gramHat: Float64Array;
  cross: Float64Array;
  meanHat: Float64Array;
}

function momentsOf(st: LayerInputStats, D: number): Moments | string {
  const an = st.anchor;
  if ((st.groups ?? 1) !== 1) return 'no anchored patch statistics of an ungrouped conv';
  if (st.patchGram && st.patchDim === D && st.patchMean && an?.patchGram && an.patchCross && an.patchMean && (st.patchCount ?? 0) > 0) {
    return { level: 'patch', n: st.patchCount!, gram: st.patchGram, mean: st.patchMean, gramHat: an.patchGram, cross: an.patchCross, meanHat: an.patchMean };
  }
  if (st.kind === 'conv' && !st.patchGram && st.dim === D && st.mean && an && st.count > 0 && an.gram.length === D * D && an.cross.length === D * D) {
    return { level: 'channel', n: st.count, gram: st.gram, mean: st.mean, gramHat: an.gram, cross: an.cross, meanHat: an.mean };
  }
  return 'no anchored patch statistics of an ungrouped conv';
}

/** `st` with the moments of `m`'s level replaced. */
function withMoments(st: LayerInputStats, m: Moments): LayerInputStats {
  const an = st.anchor!;
  return m.level === 'patch'
    ? { ...st, patchGram: m.gram, patchMean: m.mean, anchor: { ...an, patchGram: m.gramHat, patchCross: m.cross, patchMean: m.meanHat } }
    : { ...st, gram: m.gram, mean: m.mean, anchor: { ...an, gram: m.gramHat, cross: m.cross, mean: m.meanHat } };
}

/** The statistics of refits through the activation, at any current fit (flatRefitStats). */
export interface FlatRefitStats {
  /** Weight of the moments' linear objective in the mixture. */
  alpha: number;
  /** Anchored statistics whose linear fit is the fit through the activation at the predictions of `cur`. */
  at(cur: PatchMap): LayerInputStats;
}

/**
 * Prepares the statistics of refits through the activation (see the file comment): what
 * does not depend on the current fit (centered moments, the sample covariance, the
 * targets, the lift through W) once, the target's moments at each call. `st` must carry
 * anchored patch moments of an ungrouped conv with patch dimension s.dim (or channel
 * moments of a 1x1 conv); a reason when it does not.
 */
export function flatRefitStats(
  st: LayerInputStats, s: PatchSamples, rows: Int32Array, orig: PatchMap, region: FlatRegion, sync?: SyncGemm,
): FlatRefitStats | string {
  const D = s.dim;
  const mo = momentsOf(st, D);
  if (typeof mo === 'string') return mo;
  if (orig.w.cols !== D) return `a weight of ${orig.w.cols} columns for patches of ${D}`;
  const { n } = mo;
  const O = orig.w.rows;
  const alpha = linearWeight(D, rows.length);
  const mix = (a: ArrayLike<number>, b: ArrayLike<number>): Float64Array => Float64Array.from(a, (v, i) => alpha * v + (1 - alpha) * b[i]!);
  const raw = (cov: ArrayLike<number>, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array => {
    const out = new Float64Array(D * D);
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) out[i * D + j] = n * (cov[i * D + j]! + a[i]! * b[j]!);
    return out;
  };
  const mu = mo.mean;
  const C = centered(mo.gram, n, D, mu, mu);
  const tLin = product(orig.w, { rows: D, cols: D, data: centered(mo.cross, n, D, mo.meanHat, mu) }, { transB: true }, sync).data;
  const pHat = rowsOf(s.xHat, D, rows);
  const y = responses(rowsOf(s.x, D, rows), orig, sync);
  // x̂'s sample moments do not depend on the target: taken once (the target's at each call).
  const hat = sampleCovariance(pHat, sync);
  const muHatNew = mix(mo.meanHat, hat.mean);
  const gramHat = raw(mix(centered(mo.gramHat, n, D, mo.meanHat, mo.meanHat), hat.cov), muHatNew, muHatNew);
  const lift = rowSpaceLift(orig.w, sync);
  const wMu = product(orig.w, { rows: D, cols: 1, data: Float64Array.from(mu) }, {}, sync).data;
  return {
    alpha,
    at: (cur: PatchMap) => {
      const z = flatTargets(y, responses(pHat, cur, sync), region);
      const { mean: zMean, cov: tCov } = crossCovariance({ rows: rows.length, cols: O, data: z }, pHat, hat.mean, sync);
      const xMixed = lift.matrix({ rows: O, cols: D, data: mix(tLin, tCov) });
      // E'[W·x] = α·W·μ + (1 − α)·(E_s[z] − b): μ moves by the lift of the difference.
      const shift = Float64Array.from(wMu, (v, i) => (1 - alpha) * (zMean[i]! - orig.b[i]! - v));
      const muNew = Float64Array.from(lift.vector(shift), (v, i) => v + mu[i]!);
      return withMoments(st, { level: mo.level, n, gram: raw(C, muNew, muNew), mean: muNew, gramHat, cross: raw(xMixed, muHatNew, muNew), meanHat: muHatNew });
    },
  };
}

/** The linear (pre-activation) anchored output error of `cur` on the statistics (relative), or undefined. */
export function anchoredPatchError(st: LayerInputStats, orig: PatchMap, cur: PatchMap, sync?: SyncGemm): number | undefined {
  const D = orig.w.cols;
  const mo = momentsOf(st, D);
  if (typeof mo === 'string') return undefined;
  const { num, den } = anchoredError(orig.w, cur.w, {
    gram: centered(mo.gram, mo.n, D, mo.mean, mo.mean),
    gramHat: centered(mo.gramHat, mo.n, D, mo.meanHat, mo.meanHat),
    cross: centered(mo.cross, mo.n, D, mo.meanHat, mo.mean),
  }, sync);
  return den > 0 ? Math.sqrt(num / den) : undefined;
}

/** What the caller's graph does for the refit loop. */
export interface RefitHooks {
  /** Rewrites the layer with these statistics (from the state before any rewrite of it); a reason when it could not. */
  apply(stats: LayerInputStats): string | undefined;
  /** Rewrites the layer with its linear fit again (from the state before any rewrite of it); a reason when it could not. */
  applyLinear(): string | undefined;
  /** The weight and bias the layer's chain now computes (y = Ŵ·p̂ + b̂). */
  current(): PatchMap | string;
  /** Undoes the layer's rewrite. */
  rollback(): void;
}

export interface RefitOutcome {
  /** For the layer's report. */
  note: string;
  /** Whether the refit was kept (else the graph holds the linear fit again). */
  kept: boolean;
  /** Not tried at all (too few samples, no statistics to refit on): the linear fit was never undone. */
  skipped?: boolean;
  /** The kept fit's linear anchored error on the moments, when the refit was kept. */
  dataError?: number;
}

/**
 * With the layer already rewritten by its linear fit on `st`: refits it FLAT_REFITS times
 * through the activation and keeps the result when its post-activation error on the
 * held-back samples is lower than the linear fit's; else the linear fit is applied again.
 */
export function refitThroughActivation(
  st: LayerInputStats, s: PatchSamples, orig: PatchMap, region: FlatRegion & { op?: string }, hooks: RefitHooks, sync?: SyncGemm, refits = FLAT_REFITS,
): RefitOutcome {
  const { fit, held } = splitRows(s.n);
  const what = region.op ?? (region.hi === undefined ? 'Relu' : 'Clip');
  const restore = (why: string): RefitOutcome => {
    hooks.rollback();
    const again = hooks.applyLinear();
    if (again) throw new Error(`the linear fit could not be applied again: ${again}`);
    return { note: `fit through the ${what} not kept (${why})`, kept: false };
  };
  if (s.n < MIN_SAMPLES) return { note: `fit through the ${what} skipped (${s.n} patch sample(s), fewer than ${MIN_SAMPLES})`, kept: false, skipped: true };
  let cur = hooks.current();
  if (typeof cur === 'string') return { note: `fit through the ${what} skipped (${cur})`, kept: false, skipped: true };
  // The held-back patches and the original's responses to them, read once for both judgements.
  const heldHat = rowsOf(s.xHat, s.dim, held);
  const heldY = responses(rowsOf(s.x, s.dim, held), orig, sync);
  const before = postActivationError(heldY, heldHat, cur, region, sync);
  const objective = flatRefitStats(st, s, fit, orig, region, sync);
  if (typeof objective === 'string') return { note: `fit through the ${what} skipped (${objective})`, kept: false, skipped: true };
  for (let k = 0; k < refits; k++) {
    const next = objective.at(cur);
    hooks.rollback();
    const why = hooks.apply(next);
    if (why) return restore(why);
    cur = hooks.current();
    if (typeof cur === 'string') return restore(cur);
  }
  const after = postActivationError(heldY, heldHat, cur, region, sync);
  const figures = `post-${what} error on ${held.length} held-back patches ${before.toExponential(2)} → ${after.toExponential(2)}`;
  if (!(after < before)) return restore(figures);
  return { note: `fitted through the ${what} (${figures})`, kept: true, dataError: anchoredPatchError(st, orig, cur, sync) };
}

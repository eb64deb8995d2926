/**
 * Tucker-2 of a (grouped) conv kernel as the weights of a three-conv chain (Kim et al. 2015):
 * per group j, W_j [t, s, K] ≈ G_j ×_T U_T ×_S U_S, returned as
 *   first [g·r1, s]      = U_Sᵀ per group (the first 1x1),
 *   core  [g·r2, r1, K]  = G_j per group (the conv with the original window),
 *   last  [T, r2]        = U_T per group (the last 1x1).
 * Three fits, by the statistics given:
 *  - none: HOSVD + HOOI (tucker2.ts);
 *  - `channel` (input-channel Grams): the first factor from the whitened SVD of the mode-S
 *    unfolding (whitened-svd.ts), the output side from the truncated SVD of the rest;
 *  - `anchor`: the first factor from the anchored channel fit, then core and last factor
 *    together as the reduced-rank regression of the original output W·p onto Ã·p̂
 *    (Ã = A ⊗ I_K on the patch p̂): with Z = Ã·(Ĉ + δI)·Ãᵀ and R = W·(X + δI)ᵀ·Ãᵀ on the
 *    patch covariances, B·G = [R·L⁻ᵀ]_r2·L⁻¹ (Z = L·Lᵀ; anchored.ts), and the output mean
 *    error W·E[p] − Ŵ·E[p̂] as a bias correction.
 * With `patches` (and no anchor) the last factor of each group is refitted by least squares
 * on them (refit.ts), the mean error moved into the bias correction.
 * Fits of one kernel at several ranks can share their rank-independent work (`shared`).
 */
import type { Rng } from '../util/rng.js';
import { dampingOf, meanEnergy, meanError, reducedRankFromMoments, type AnchoredPatch } from './anchored.js';
import { product, runSync, type SyncGemm } from './engine.js';
import { sliceCols, type Matrix } from './matrix.js';
import { outputEnergy, refitLastFactorGiven, type PatchMoments } from './refit.js';
import { leftVectorsByGram, svd } from './svd.js';
import { tucker2Sync } from './tucker2.js';
import { whitenedFactorsAt, whitenedSvdWork, type ChannelWhitening, type WhitenedSvdWork } from './whitened-svd.js';

/** A conv kernel [T, S/g, K] (K = ∏k, fp32 as stored) and its group count g. */
export interface ConvKernel {
  data: Float32Array;
  /** [T, S/g, K]. */
  shape: readonly [number, number, number];
  groups: number;
}

export interface Tucker2ConvOptions {
  rng?: Rng;
  gemm?: SyncGemm;
  /** Per-group input-channel whitening (Gram [s·s], damping): the data-aware first factor. */
  channel?: readonly ChannelWhitening[];
  /** Per-group patch moments: the last factor is refitted on them. */
  patches?: PatchMoments;
  /** Anchored statistics; when given, `channel` and `patches` are not used. */
  anchor?: { channel: readonly ChannelWhitening[]; patch?: readonly AnchoredPatch[]; patchDamp: number };
  /**
   * Work kept between fits of this kernel on these statistics at other ranks (a layer's
   * rungs): the results are the same as without it. Made by createTucker2Shared; fits of
   * another kernel or statistics replace what it holds.
   */
  shared?: Tucker2Shared;
}

/**
 * The rank-independent work of one layer's data-aware fits, shared by its rungs (sensitivity
 * fits a layer at several rank pairs, each costing seconds at 512 channels): per group the
 * whitened mode-S unfolding with its Cholesky factor and, once a rank takes the exact path,
 * its full SVD (whitened-svd.ts: WhitenedSvdWork); the output side at the last r1 (its
 * U_T serves every r2); tr(W·Σ·Wᵀ) of the refit on the patch moments; the anchored fit's
 * W·Xᵀ. Up to about 3·s·t·K·8 bytes per group (60 MB for a 512x512x3x3 conv), so
 * the caller holds it only while it fits the layer (conv-tucker2.ts: on its match).
 */
export interface Tucker2Shared { work?: SharedWork }

export const createTucker2Shared = (): Tucker2Shared => ({});

interface SharedWork {
  /** What the work was made from (compared by identity). */
  kernel: Float32Array;
  whiten?: readonly ChannelWhitening[];
  patches?: readonly Float64Array[];
  anchor?: readonly AnchoredPatch[];
  patchDamp?: number;
  groups: GroupWork[];
}

interface GroupWork {
  svd?: WhitenedSvdWork;
  /** The whitened fit's input side and U_T at one r1 (the last asked). */
  atRank?: { r1: number; first: Float32Array; q: Matrix; ut: Matrix };
  /** tr(W·Σ·Wᵀ) on the group's patch moments. */
  energy?: number;
  /** Anchored: W·Xᵀ [t, D], tr(W·C·Wᵀ) on the centered C, and ‖W·E[p]‖². */
  anchored?: { crossTarget: Matrix; energy: number; meanEnergy: number };
}

export interface Tucker2Conv {
  /** Ranks per group as fitted (requests past r2·K or r1·K are clamped). */
  r1: number;
  r2: number;
  first: Float32Array;
  core: Float32Array;
  last: Float32Array;
  /** ‖W − Ŵ‖_F / ‖W‖_F from the fp32 chain weights. */
  relError: number;
  /** With patch statistics: the relative output error on them. */
  dataError?: number;
  /** With patch means: the bias correction [T]. */
  biasDelta?: Float64Array;
}

/** Tucker-2 of `kernel` at per-group ranks [r1 (input side), r2 (output side)]. */
export function tucker2Conv(kernel: ConvKernel, ranks: readonly [number, number], opts: Tucker2ConvOptions = {}): Tucker2Conv {
  const [T, s] = kernel.shape;
  const t = T / kernel.groups;
  const [r1, r2] = ranks;
  if (!Number.isInteger(r1) || !Number.isInteger(r2) || r1 < 1 || r2 < 1 || r1 > s || r2 > t) {
    throw new RangeError(`tucker2Conv: ranks [${r1}, ${r2}] are out of range for ${t}x${s} channels per group`);
  }
  const groups = groupData(kernel);
  const work = sharedWork(opts, kernel);
  if (opts.anchor) return anchoredTucker2(kernel, groups, r1, r2, opts.anchor, opts.gemm, work);
  if (opts.channel) return refitted(kernel, groups, whitenedTucker2(kernel, groups, r1, r2, opts.channel, opts.gemm, work, !opts.patches), opts.patches, opts.gemm, work);
  const f = hooiTucker2(kernel, groups, r1, r2, opts);
  return Number.isFinite(f.relError) ? refitted(kernel, groups, f, opts.patches, opts.gemm, work) : f;
}

/** The shared work for this kernel and these statistics: `opts.shared`'s when it was made from them, else new (kept there when given). */
function sharedWork(opts: Tucker2ConvOptions, kernel: ConvKernel): SharedWork {
  const whiten = opts.anchor?.channel ?? opts.channel;
  const patches = opts.anchor ? undefined : opts.patches?.gram;
  const anchor = opts.anchor?.patch;
  const patchDamp = opts.anchor?.patchDamp;
  const old = opts.shared?.work;
  const same = <X>(a: readonly X[] | undefined, b: readonly X[] | undefined, eq: (x: X, y: X) => boolean): boolean =>
    a === b || (a !== undefined && b !== undefined && a.length === b.length && a.every((x, i) => eq(x, b[i]!)));
  if (old && old.kernel === kernel.data && old.groups.length === kernel.groups && old.patchDamp === patchDamp
    && same(old.whiten, whiten, (x, y) => x.gram === y.gram && x.cross === y.cross && (x.damp ?? 0) === (y.damp ?? 0))
    && same(old.patches, patches, (x, y) => x === y)
    && same(old.anchor, anchor, (x, y) => x.gramHat === y.gramHat && x.cross === y.cross && x.mean === y.mean && x.meanHat === y.meanHat)) return old;
  const work: SharedWork = { kernel: kernel.data, whiten, patches, anchor, patchDamp, groups: Array.from({ length: kernel.groups }, () => ({})) };
  if (opts.shared) opts.shared.work = work;
  return work;
}

/** Each group's kernel [t, s·K] in float64 (group j owns output channels j·t…). */
function groupData(kernel: ConvKernel): Float64Array[] {
  const [T, s, K] = kernel.shape;
  const per = (T / kernel.groups) * s * K;
  return Array.from({ length: kernel.groups }, (_, j) => {
    const d = new Float64Array(per);
    for (let i = 0; i < per; i++) d[i] = kernel.data[j * per + i]!;
    return d;
  });
}

function hooiTucker2(kernel: ConvKernel, groups: Float64Array[], r1In: number, r2In: number, opts: Tucker2ConvOptions): Tucker2Conv {
  const [T, s, K] = kernel.shape;
  const G = kernel.groups;
  const t = T / G;
  const svdOpts = opts.rng ? { rng: opts.rng } : {};
  const parts = groups.map((data) => tucker2Sync({ data, shape: [t, s, K] }, [r1In, r2In], { gemm: opts.gemm, svd: svdOpts }));
  // Ranks beyond r2·K (or r1·K) cannot lower the error, and the numerics clamp them: use what came back.
  const r1 = parts[0]!.uS.cols;
  const r2 = parts[0]!.uT.cols;
  if (parts.some((d) => d.uS.cols !== r1 || d.uT.cols !== r2)) throw new Error('tucker2Conv: groups came back with different ranks');
  const first = new Float32Array(G * r1 * s); // [g·r1, s]
  const core = new Float32Array(G * r2 * r1 * K); // [g·r2, r1, K]
  const last = new Float32Array(T * r2); // [T, r2]
  parts.forEach((d, j) => {
    const { uT, uS } = d;
    for (let b = 0; b < r1; b++) for (let c = 0; c < s; c++) first[(j * r1 + b) * s + c] = uS.data[c * r1 + b]!;
    for (let i = 0; i < r2 * r1 * K; i++) core[j * r2 * r1 * K + i] = d.core.data[i]!;
    for (let a = 0; a < t; a++) for (let b = 0; b < r2; b++) last[(j * t + a) * r2 + b] = uT.data[a * r2 + b]!;
  });
  return { r1, r2, first, core, last, relError: tucker2Error(kernel, first, core, last, r1, r2, opts.gemm) };
}

/** The last 1x1 of each group refitted by least squares on the patch moments (refit.ts). */
function refitted(
  kernel: ConvKernel, groups: Float64Array[], f: Tucker2Conv, patches: PatchMoments | undefined, sync: SyncGemm | undefined, work: SharedWork,
): Tucker2Conv {
  if (!patches) return f;
  const [T, s, K] = kernel.shape;
  const t = T / kernel.groups;
  const D = s * K;
  const { r1, r2 } = f;
  const last = Float32Array.from(f.last);
  const biasDelta = new Float64Array(T);
  let num = 0;
  let den = 0;
  groups.forEach((data, j) => {
    const w: Matrix = { rows: t, cols: D, data };
    const gw = work.groups[j]!;
    // tr(W·Σ·Wᵀ) does not depend on the ranks: once per layer.
    gw.energy ??= outputEnergy(w, patches.gram[j]!, sync);
    const h = coreTimesFirst(s, K, f.core, f.first, j, r1, r2, sync);
    const r = refitLastFactorGiven(w, { rows: r2, cols: D, data: h }, patches.gram[j]!, gw.energy, patches.mean?.[j], sync);
    for (let a = 0; a < t; a++) for (let c = 0; c < r2; c++) last[(j * t + a) * r2 + c] = r.b[a * r2 + c]!;
    if (r.biasDelta) for (let a = 0; a < t; a++) biasDelta[j * t + a] = r.biasDelta[a]!;
    num += r.num;
    den += r.den;
  });
  const relError = tucker2Error(kernel, f.first, f.core, last, r1, r2, sync);
  return { ...f, last, relError, dataError: den > 0 ? Math.sqrt(Math.max(num, 0) / den) : 0, biasDelta: patches.mean ? biasDelta : undefined };
}

/**
 * Data-aware Tucker-2 (per group): the input-side factor comes from the whitened SVD of
 * the mode-S unfolding, W_(S) ≈ P·Q with P = L⁻ᵀU_rΣ^½ minimising ‖L_xᵀ(W_(S) − P·Q)‖ for
 * the input-channel covariance L_x·L_xᵀ (so the first 1x1 keeps what the data excites);
 * the output side is the plain truncated SVD of Q's mode-T unfolding.
 */
function whitenedTucker2(
  kernel: ConvKernel, groups: Float64Array[], r1In: number, r2In: number, whiten: readonly ChannelWhitening[], sync: SyncGemm | undefined,
  work: SharedWork, withError: boolean,
): Tucker2Conv {
  const [T, s, K] = kernel.shape;
  const G = kernel.groups;
  const t = T / G;
  const r1 = Math.min(r1In, s, t * K);
  const r2 = Math.min(r2In, t, r1 * K);
  const first = new Float32Array(G * r1 * s);
  const core = new Float32Array(G * r2 * r1 * K);
  const last = new Float32Array(T * r2);
  groups.forEach((data, j) => {
    const gw = work.groups[j]!;
    // The whitening (and the full SVD, for the ranks that take it) is the same at every rank.
    gw.svd ??= whitenedSvdWork(unfoldS(data, t, s, K), whiten[j]!, sync);
    if (gw.atRank?.r1 !== r1) {
      const sv = whitenedFactorsAt(gw.svd, r1, sync);
      const a = new Float32Array(r1 * s);
      for (let b = 0; b < r1; b++) for (let c = 0; c < s; c++) a[b * s + c] = sv.left[c * r1 + b]!;
      // Q [r1, t·K] as the mode-T unfolding [t, r1·K]: (a, b·K + k) = Q[b, a·K + k].
      const qt = new Float64Array(t * r1 * K);
      for (let b = 0; b < r1; b++) for (let i = 0; i < t; i++) for (let k = 0; k < K; k++) qt[(i * r1 + b) * K + k] = sv.right[b * t * K + i * K + k]!;
      // U_T [t, ≥ r2]: the wide Q_(T)'s left singular vectors, from its small Gram matrix (as HOOI does).
      const q: Matrix = { rows: t, cols: r1 * K, data: qt };
      gw.atRank = { r1, first: a, q, ut: t <= r1 * K ? runSync(leftVectorsByGram(q), sync) : svd(q, sync).u };
    }
    const { first: a, q, ut } = gw.atRank;
    first.set(a, j * r1 * s);
    for (let i = 0; i < t; i++) for (let c = 0; c < r2; c++) last[(j * t + i) * r2 + c] = ut.data[i * ut.cols + c]!;
    // core = U_Tᵀ·Q_(T) [r2, r1·K]
    const g = product(ut.cols === r2 ? ut : sliceCols(ut, 0, r2), q, { transA: true }, sync);
    core.set(Float32Array.from(g.data), j * r2 * r1 * K);
  });
  return { r1, r2, first, core, last, relError: withError ? tucker2Error(kernel, first, core, last, r1, r2, sync) : NaN };
}

/**
 * Anchored Tucker-2 (see the header): the first factor from the anchored channel fit, then
 * core and last factor by reduced-rank regression on the anchored patch covariances (when
 * given; else the output side as in whitenedTucker2), and the bias correction.
 *
 * Everything that depends on the ranks runs in the space Ã maps into (r1·K wide), never
 * on D×D (D = s·K, 4608 for 512 channels at 3x3): with the chain Ŵ = P·Ã (P = B·G from
 * the stored fp32 factors) and Z₀ = Ã·Ĉ·Ãᵀ, R₀ = W·Xᵀ·Ãᵀ,
 *   E‖W·p − Ŵ·p̂‖² = tr(W·C·Wᵀ) − 2·⟨P, R₀⟩ + ⟨P·Z₀, P⟩,
 * and the damped moments the fit takes are Z₀ + δ·(A·Aᵀ ⊗ I_K) and R₀ + δ·W·Ãᵀ.
 * tr(W·C·Wᵀ) and W·Xᵀ are the layer's, computed once.
 */
function anchoredTucker2(
  kernel: ConvKernel, groups: Float64Array[], r1In: number, r2In: number, an: NonNullable<Tucker2ConvOptions['anchor']>, sync: SyncGemm | undefined,
  work: SharedWork,
): Tucker2Conv {
  const base = whitenedTucker2(kernel, groups, r1In, r2In, an.channel, sync, work, !an.patch);
  if (!an.patch) return base;
  const [T, s, K] = kernel.shape;
  const t = T / kernel.groups;
  const D = s * K;
  const { r1, r2, first } = base;
  const q = r1 * K;
  const core = new Float32Array(kernel.groups * r2 * q);
  const last = new Float32Array(T * r2);
  const biasDelta = new Float64Array(T);
  let num = 0;
  let den = 0;
  groups.forEach((data, j) => {
    const p = an.patch![j]!;
    const a: Matrix = { rows: r1, cols: s, data: Float64Array.from(first.subarray(j * r1 * s, (j + 1) * r1 * s)) };
    const w: Matrix = { rows: t, cols: D, data: Float64Array.from(data) };
    const gw = work.groups[j]!;
    gw.anchored ??= {
      crossTarget: product(w, { rows: D, cols: D, data: p.cross }, { transB: true }, sync),
      energy: outputEnergy(w, p.gram, sync),
      meanEnergy: meanEnergy(w, p.mean),
    };
    const delta = dampingOf(p.gramHat, D, an.patchDamp);
    // Z₀ = Ã·Ĉ·Ãᵀ: Ĉ's rows are (c, k), so A [r1, s] times Ĉ read as [s, K·D] is Ã·Ĉ with
    // rows (b, k) [q, D]; Ĉ symmetric, so applying Ã to its columns finishes Z₀.
    const ac = product(a, { rows: s, cols: K * D, data: p.gramHat }, {}, sync);
    const z0 = applyFirst(a, { rows: q, cols: D, data: ac.data }, K, sync);
    const r0 = applyFirst(a, gw.anchored.crossTarget, K, sync);
    // Z₀ and R₀ stay for the error: the damped moments are copies.
    let z = z0;
    let r = r0;
    if (delta !== 0) {
      z = { rows: q, cols: q, data: Float64Array.from(z0.data) };
      r = { rows: t, cols: q, data: Float64Array.from(r0.data) };
      const aat = product(a, a, { transB: true }, sync);
      for (let b = 0; b < r1; b++) for (let b2 = 0; b2 < r1; b2++) for (let k = 0; k < K; k++) z.data[(b * K + k) * q + b2 * K + k] += delta * aat.data[b * r1 + b2]!;
      const wa = applyFirst(a, w, K, sync).data;
      for (let i = 0; i < r.data.length; i++) r.data[i] += delta * wa[i]!;
    }
    const fit = reducedRankFromMoments(z, r, r2, 0, sync);
    const rr = fit.b.cols;
    for (let i = 0; i < t; i++) for (let c = 0; c < r2; c++) last[(j * t + i) * r2 + c] = c < rr ? fit.b.data[i * rr + c]! : 0;
    for (let c = 0; c < rr; c++) core.set(Float32Array.from(fit.g.data.subarray(c * q, (c + 1) * q)), (j * r2 + c) * q);
    // The chain as stored (fp32), against the original on the statistics: P = B·G.
    const lastJ: Matrix = { rows: t, cols: r2, data: Float64Array.from(last.subarray(j * t * r2, (j + 1) * t * r2)) };
    const pm = product(lastJ, { rows: r2, cols: q, data: Float64Array.from(core.subarray(j * r2 * q, (j + 1) * r2 * q)) }, {}, sync);
    const pz = product(pm, z0, {}, sync).data;
    let cross = 0;
    let quad = 0;
    for (let i = 0; i < pm.data.length; i++) {
      cross += pm.data[i]! * r0.data[i]!;
      quad += pz[i]! * pm.data[i]!;
    }
    num += Math.max(0, gw.anchored.energy - 2 * cross + quad);
    den += gw.anchored.energy + gw.anchored.meanEnergy;
    const wHat = product(lastJ, { rows: r2, cols: D, data: coreTimesFirst(s, K, core, first, j, r1, r2, sync) }, {}, sync);
    biasDelta.set(meanError(w, wHat, p.mean, p.meanHat), j * t);
  });
  const relError = tucker2Error(kernel, first, core, last, r1, r2, sync);
  return { r1, r2, first, core, last, relError, dataError: den > 0 ? Math.sqrt(num / den) : 0, biasDelta };
}

/** Mode-S unfolding [s, t·K] of one group's kernel [t, s, K]: element (c, a·K + k) = W[a, c, k]. */
function unfoldS(w: Float64Array, t: number, s: number, K: number): Matrix {
  const data = new Float64Array(t * s * K);
  for (let a = 0; a < t; a++) {
    for (let b = 0; b < s; b++) {
      const src = (a * s + b) * K;
      const dst = b * t * K + a * K;
      for (let c = 0; c < K; c++) data[dst + c] = w[src + c]!;
    }
  }
  return { rows: s, cols: t * K, data };
}

/**
 * M·Ãᵀ for M [n, s·K] and Ã = A ⊗ I_K (A [r, s]): out [n, r·K] with
 * out[i, b·K + k] = Σ_c A[b, c]·M[i, c·K + k] (the first 1x1 applied to patch-indexed rows).
 */
export function applyFirst(a: Matrix, m: Matrix, K: number, sync: SyncGemm | undefined): Matrix {
  const { rows: r, cols: s } = a;
  const n = m.rows;
  const perm = new Float64Array(n * K * s); // [(i, k), c]
  for (let i = 0; i < n; i++) for (let c = 0; c < s; c++) for (let k = 0; k < K; k++) perm[(i * K + k) * s + c] = m.data[i * s * K + c * K + k]!;
  const p = product({ rows: n * K, cols: s, data: perm }, a, { transB: true }, sync).data; // [(i, k), b]
  const out = new Float64Array(n * r * K);
  for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) for (let b = 0; b < r; b++) out[i * r * K + b * K + k] = p[(i * K + k) * r + b]!;
  return { rows: n, cols: r * K, data: out };
}

/**
 * Group j's core times its first factor, P [r2, s·K] with P[a, c·K + k] = Σ_b G[a, b, k]·A[b, c]:
 * the chain's first two convs as one kernel (the reconstruction's and the refit's H).
 * One product: G as [(a, k), b] times A [b, s], then regrouped to [a, (s, k)].
 */
function coreTimesFirst(s: number, K: number, core: Float32Array, first: Float32Array, j: number, r1: number, r2: number, sync: SyncGemm | undefined): Float64Array {
  const gk = new Float64Array(r2 * K * r1);
  for (let a = 0; a < r2; a++) for (let b = 0; b < r1; b++) for (let k = 0; k < K; k++) gk[(a * K + k) * r1 + b] = core[((j * r2 + a) * r1 + b) * K + k]!;
  const p1 = product({ rows: r2 * K, cols: r1, data: gk }, { rows: r1, cols: s, data: Float64Array.from(first.subarray(j * r1 * s, (j + 1) * r1 * s)) }, {}, sync).data;
  const p = new Float64Array(r2 * s * K);
  for (let a = 0; a < r2; a++) for (let k = 0; k < K; k++) for (let c = 0; c < s; c++) p[(a * s + c) * K + k] = p1[(a * K + k) * s + c]!;
  return p;
}

/**
 * ‖W − Ŵ‖_F / ‖W‖_F from the stored (fp32) chain weights, so wiring bugs show:
 * Ŵ_j[t, s, k] = Σ_a B[j·T/g + t, a] Σ_b G[j·r2 + a, b, k] A[j·r1 + b, s].
 */
export function tucker2Error(
  kernel: ConvKernel, first: Float32Array, core: Float32Array, last: Float32Array, r1: number, r2: number, sync?: SyncGemm,
): number {
  const [T, s, K] = kernel.shape;
  const t = T / kernel.groups;
  const w = kernel.data;
  let num = 0;
  let den = 0;
  for (let j = 0; j < kernel.groups; j++) {
    const p = coreTimesFirst(s, K, core, first, j, r1, r2, sync);
    const wh = product({ rows: t, cols: r2, data: Float64Array.from(last.subarray(j * t * r2, (j + 1) * t * r2)) }, { rows: r2, cols: s * K, data: p }, {}, sync).data;
    const wOff = j * t * s * K;
    for (let i = 0; i < t * s * K; i++) {
      const x = w[wOff + i]!;
      const dd = x - wh[i]!;
      num += dd * dd;
      den += x * x;
    }
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}

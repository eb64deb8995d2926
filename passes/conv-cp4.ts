/**
 * conv-cp4 — a Conv becomes 1x1 → (a depthwise conv along each spatial axis) → 1x1
 * through a rank-R CP decomposition of its kernel with every axis a mode of its own,
 * fitted by ALS (Lebedev et al. 2015); for a 2-D kernel (the 4-way CP)
 * W[t, s, y, x] ≈ Σ_r A[t, r]·B[s, r]·Y[y, r]·X[x, r].
 *
 * Before: Y = Conv(X, W [T, S, kh, kw], b; strides [sh, sw], pads [ph0, pw0, ph1, pw1],
 *                  dilations [dh, dw], auto_pad)
 * After:  Z1 = Conv(X,  Bᵀ [R, S, 1, 1])
 *         Z2 = Conv(Z1, Yᵀ [R, 1, kh, 1]; group R, strides [sh, 1], pads [ph0, 0, ph1, 0], dilations [dh, 1], auto_pad)
 *         Z3 = Conv(Z2, Xᵀ [R, 1, 1, kw]; group R, strides [1, sw], pads [0, pw0, 0, pw1], dilations [1, dw], auto_pad)
 *         Y  = Conv(Z3, A  [T, R, 1, 1], b)
 * With n spatial axes the chain has one depthwise conv per axis carrying that axis's
 * kernel, stride, dilation and pads (1-D: 1x1 → depthwise k → 1x1, conv-cp's chain;
 * 3-D: three depthwise convs kd×1×1, 1×kh×1, 1×1×kw). The window is split by axis as in
 * conv-tt (no bias before the last conv, so zero padding commutes through the chain; under
 * auto_pad SAME_* each axis pads by its own kernel, stride and dilation). Depthwise kernels
 * other than 3×3 can be slow paths in some runtimes: the latency screen judges each chain.
 * Grouped convs (group g): each group's kernel [T/g, S/g, k…] is a CP of its own at the
 * same rank R (conv-split-groups.ts); the weights stack the groups' factors
 * ([g·R, S/g, 1…], [g·R, 1, …k_a…], [T, R, 1…]), the 1x1 convs take group g and the
 * depthwise ones group g·R.
 * Kernels with an extent 1 (1xk, kx1, …), 1x1 and depthwise convs are declined with the
 * reason (conv-cp handles the 3-way CP of any of its convs).
 *
 * The factorization is linalg/cpn-conv.ts (CP-ALS with the norm bound of cp-als.ts; a fit
 * that is not finite is declined; a degenerate one is refitted under the sensitivity bound,
 * or the rank declined when that refit cannot meet it, and the chain's sensitivity goes into
 * the doc string and the layer's note, as in conv-cp). With well-determined calibration patch
 * statistics the ALS runs on the kernel whitened mode by mode (channel, each kernel axis:
 * linalg/mode-whitening.ts, as conv-tt; the partly compressed model's statistics when
 * anchored) and each input-side factor maps back by its mode's L⁻ᵀ; then the last factor is
 * refitted on the patches (anchored statistics: fitted to the original model's outputs given
 * the partly compressed model's patches) and the mean error moved into the bias. With those
 * statistics every factor is then refined on that same objective by ALS sweeps
 * (linalg/cp-data-als.ts, as conv-cp's 3-way chain: the mode-by-mode whitening only
 * approximates the patch covariance) as far as their work bound allows.
 */
import { attrInt, intAttr } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { combineGroupErrors, energyOf, groupSlice, outputEnergy, stackGroups } from '../src/linalg/conv-groups.js';
import { cpNdConv, cpNdError, cpNdKernel, cpNdPrefix, cpNdSensitivity, refineCpNdOnData, type CpNdConv } from '../src/linalg/cpn-conv.js';
import { chainSweepCount, chainSweepFlops, CP_DATA_CG_ITERATIONS } from '../src/linalg/cp-data-als.js';
import { stableCpFlops, worstStabilized } from '../src/linalg/cp-sensitivity.js';
import { fitLastFactor, lastFactorFlops } from '../src/linalg/last-factor.js';
import type { SyncGemm } from '../src/linalg/engine.js';
import { cpEnergyRank, cpRanks } from '../src/rewrite/cp-rank.js';
import type { NodeProto } from '../src/onnx/schema.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import { chainConvAttrs, convCost, convNode, groupKernels, type ConvGeometry, type GroupKernel } from '../src/rewrite/conv-geometry.js';
import { ANCHOR_PATCH_DAMP, MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { unwhitenMode, whitenModes } from '../src/linalg/mode-whitening.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { acceptsUnless } from '../src/rewrite/conv-split.js';
import {
  axisKernel, axisLetters, axisPlacement, chainMismatchNd, composeGroups, groupedSplitDeclines, matchModeWhitened, modeWhitening, type ModeWhitenedMatch,
} from '../src/rewrite/conv-split-groups.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import type { RankPolicy } from '../src/rewrite/rank-policy.js';
import type { Rng } from '../src/util/rng.js';
import { correctedBias, tucker2RawRanks, type ConvTucker2Match } from './conv-tucker2.js';
import { quickDegenerate, sensitivityNote, shippable } from './conv-cp.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';

export interface ConvCp4Match extends ModeWhitenedMatch {
  /** Each group's kernel: for the Tucker-2 channel ranks that bound the CP rank from below. */
  groups: GroupKernel[];
  spectra?: ConvTucker2Match['spectra'];
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: Cp4Factors;
  /** Weight-only fits by rank, made by the energy search. */
  weightFits?: Map<number, Cp4Factors>;
  /** Relative error² of every weight-only fit the energy search made (failed fits: NaN), by rank. */
  weightErr2?: Map<number, number>;
  /** Where chooseRanks's weight-only fits (the energy search) draw and multiply. */
  search: { rng: Rng; gemm?: SyncGemm };
}

/** A fit (last factor possibly fitted on patch statistics) and the rank it was asked for. */
interface Cp4Factors extends CpNdConv {
  requested: number;
  dataError?: number;
  biasDelta?: Float64Array;
  anchored?: boolean;
  /** The ALS ran on the kernel whitened mode by mode (linalg/mode-whitening.ts). */
  whitened?: boolean;
  /** Sweeps that refined every factor on the statistics (kept ones; cp-data-als.ts). */
  dataSweeps?: number;
}

/** One group's fit; `dataDen`: its output energy on the statistics (grouped convs). */
type GroupCp4 = Cp4Factors & { dataDen?: number };

/**
 * Why CP-4's win under auto is timed against Tucker-2 where latency counts. Measured in ORT-node
 * 1.x, 1 thread, graph optimisation 'all' (as the latency screen times layers), 60
 * round-robin runs of each chain on random weights, twice: against Tucker-2 [r, r]
 * (r = C/8, C/4, C/2) at equal params and MACs on 3x3 convs of 64–256 channels at
 * 14²–56², CP-4 took 0.95–1.68x Tucker-2's time (median 1.17x; 1.3–1.4x at r = C/2, where
 * its depthwise convs run on ~3C channels). So equal MACs is not equal time.
 */
export const CP4_SLOW_PATH = 'measured 0.95–1.68x (median 1.17x) the time of Tucker-2 at equal params and MACs';

/** Iteration budget and tolerance of the ALS fit (as conv-cp). */
const ALS = { maxIter: 50, tol: 1e-5 };

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines = groupedSplitDeclines('', 'one depthwise conv is enough, conv-cp handles it', true, true);

/** A CP of a t×s×k1×…×kn tensor (one group: t = T/g, s = S/g) is exact at rank t·s·K / max(t, s, k…). */
const cpLimit = (geo: ConvGeometry): number => {
  const t = geo.T / geo.group;
  const s = geo.S / geo.group;
  return (t * s * geo.kernelSize) / Math.max(t, s, ...geo.kernel);
};

export const convCp4: LayerPass<ConvCp4Match, 'cp4'> = {
  name: 'conv-cp4',
  method: 'cp4',
  ops: ['Conv'],
  // Below every other conv pass: routed last; under auto it challenges the choice so far at equal cost (`challenge`).
  benefit: -3,

  accepts: acceptsUnless(declines),

  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext): Float32Array | string {
    // Leading dims g·R (s = S/g inputs per group).
    const G = attrInt(f.original, 'group', 1);
    const bad = chainMismatchNd(chain, factors, f.weightDims, ([T, s, ...k], [gR]) => {
      const ones = k.map(() => 1);
      return [[gR!, s!, ...ones], ...k.map((_, a) => [gR!, 1, ...axisKernel(k, a)]), [T!, gR! / G, ...ones]];
    });
    if (bad) return bad;
    const [T, s, ...k] = f.weightDims as number[];
    const R = factors[0]!.dims[0]! / G;
    return composeGroups(factors.map((x) => x.read(ext)), G, (p) => cpNdKernel(p[0]!, p.slice(1, -1), p.at(-1)!, T! / G, s!, k, R));
  },

  match(layer: LayerInfo, cx: PassContext): ConvCp4Match | Skip {
    const m = matchModeWhitened(layer, cx, declines, '4-way CP');
    return isSkip(m) ? m : { ...m, groups: groupKernels(m.w, m.geo), search: { rng: cx.rng, gemm: cx.gemm } };
  },

  rankLimits: (m) => [cpLimit(m.geo)],

  /**
   * Ranks are per group (s = S/g). fixed r → R = r; ratio ρ → ⌊ρ·T·s·K / (S + T + g·Σk)⌋
   * (params R(S + T + g·Σk));
   * energy e → the smallest R (to within 1/16) whose weight-only CP has relative
   * error² ≤ 1 − e, searched over ALS fits from max(R1, R2) (the Tucker-2 energy ranks of the channel unfoldings: a
   * lower bound) up to break-even, declined when none meets e; vbmf → max(R1, R2) of the
   * EVBMF Tucker-2 ranks. Clamped to the exact rank, aligned.
   */
  chooseRanks(m: ConvCp4Match, policy: RankPolicy): number[] | Skip {
    const { T, S, group: G, kernelSize: K } = m.geo;
    return cpRanks(policy, { T, S: m.s, K, perRank: S + T + G * kernelSum(m.geo), limit: cpLimit(m.geo), tucker2: (p) => tucker2RawRanks(m, p), energyRank: (e, lo) => energyRank(m, e, lo) });
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: cp4Cost(m.geo, ranks[0]!) }),

  // Under auto: at the largest rank no larger and no costlier than the choice so far, by
  // error (where latency counts a win is timed: CP4_SLOW_PATH). On a
  // 1-D conv the chain is conv-cp's, which has compared already: nothing to compare.
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convCp4.match(layer, cx);
    if (isSkip(m) || m.geo.spatial === 1) return undefined;
    const spec = {
      pass: convCp4, match: m, limit: cpLimit(m.geo), patchDim: m.s * m.geo.kernelSize, fixedRank: true, slowPath: CP4_SLOW_PATH,
      rough: (ranks: number[]) => factorize(m, ranks[0]!, cx, false),
    };
    return challengeAtEqualCost(layer, spec, preferred, ranks, cx, policy);
  },

  // Per group, as conv-cp: the ALS on the [t, s, k1, …] tensor and its refit under the sensitivity bound, the last factor's fit on statistics and the data sweeps.
  fitWork(m: ConvCp4Match, ranks: readonly number[]): number {
    const G = m.geo.group;
    const R = Math.min(ranks[0]!, cpLimit(m.geo));
    const dims = [m.s, ...m.geo.kernel];
    const sweeps = m.patches || m.anchors ? chainSweepFlops(m.t, dims, R, chainSweepCount(m.t, dims, R, G), CP_DATA_CG_ITERATIONS) : 0;
    const stats = m.patches || m.anchors ? lastFactorFlops(R, m.s * m.geo.kernelSize) : 0;
    return G * (stableCpFlops([m.t, ...dims], R, ALS.maxIter) + stats + sweeps);
  },

  estimate(m: ConvCp4Match, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorize(m, ranks[0]!, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvCp4Match, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo } = m;
    const f = factorize(m, ranks[0]!, cx, !cx.quickFits);
    if (isSkip(f)) return f;
    const quick = quickDegenerate(f, cx);
    if (quick) return quick;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const R = f.rank;
    const G = geo.group;
    const k = geo.kernel;
    const ones = k.map(() => 1);
    const names = ['s', ...axisLetters(k.length), 't'].map((x) => derivedName(cx, n, `lr_cp4_${x}`));
    g.addInitializer(makeFloatTensor(names[0]!, [G * R, m.s, ...ones], f.first, m.dataType));
    k.forEach((_, a) => g.addInitializer(makeFloatTensor(names[a + 1]!, [G * R, 1, ...axisKernel(k, a)], f.spatial[a]!, m.dataType)));
    g.addInitializer(makeFloatTensor(names.at(-1)!, [geo.T, R, ...ones], f.last, m.dataType));
    const z = Array.from({ length: k.length + 1 }, (_, i) => derivedName(cx, n, `lr_z${i + 1}`));
    const fitNote = (f.converged ? '' : `, ALS stopped at ${f.iterations} iterations before converging`)
      + (f.whitened ? ', whitened ALS' : '')
      + (f.dataError === undefined ? '' : f.anchored ? ', last factor fitted to the original outputs (anchored)' : ', last factor refitted on calibration patches')
      + (f.dataSweeps ? `, all factors refined on them (${f.dataSweeps} ALS sweeps)` : '');
    const note = sensitivityNote(f);
    const per = G > 1 ? ` per group (${G} groups)` : '';
    const doc = docString('conv-cp4', `rank ${R}${per} of ${geo.T}x${geo.S}x${k.join('x')} (weight rel. error ${f.relError.toExponential(2)}${fitNote}; ${note})`);
    const placement = axisPlacement(n, k.length);
    // The group is written even when g·R = 1: the chain as conv-cp4 wrote it before.
    const depthwise = (a: number) => chainConvAttrs(axisKernel(k, a), 1, placement[a]).concat(intAttr('group', G * R));
    const node = (i: number) => derivedName(cx, n, `lr_${String.fromCharCode(97 + i)}`);
    const nodes = [
      convNode(node(0), n.input[0]!, names[0]!, z[0]!, chainConvAttrs(ones, G), undefined, doc),
      ...k.map((_, a) => convNode(node(a + 1), z[a]!, names[a + 1]!, z[a + 1]!, depthwise(a), undefined, doc)),
      convNode(node(k.length + 1), z[k.length]!, names.at(-1)!, n.output[0]!, chainConvAttrs(ones, G), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!), note };
  },
};

/** Σ k_a over the spatial axes. */
const kernelSum = (geo: ConvGeometry): number => geo.kernel.reduce((a, b) => a + b, 0);

/**
 * Params R·(S + g·Σk + T) (rank R per group, g groups). MACs per output position: the
 * first 1x1 at the input resolution (∏strides); axis a's depthwise conv at the output
 * positions of axes up to a and the input positions of those after it (∏ of their
 * strides); the last 1x1 at the output.
 */
export function cp4Cost(geo: ConvGeometry, r: number): Cost {
  const g = geo.group;
  let macs = r * geo.S * geo.strideFactor;
  geo.kernel.forEach((k, a) => { macs += g * r * k * geo.strides.slice(a + 1).reduce((x, y) => x * y, 1); });
  return { params: r * (geo.S + g * kernelSum(geo) + geo.T), macsPerPosition: macs + geo.T * r };
}

/** The smallest rank in [lo, break-even] (to within a tolerance: rewrite/cp-rank.ts) whose weight-only fit keeps `energy` of ‖W‖², or why none does. */
function energyRank(m: ConvCp4Match, energy: number, lo: number): number | Skip {
  const limit = cpLimit(m.geo);
  const dense = convCost(m.geo).params;
  const per = m.geo.S + m.geo.group * kernelSum(m.geo) + m.geo.T;
  const even = Math.min(limit, Math.ceil(dense / per) - 1);
  const fits = (m.weightFits ??= new Map());
  const fit = (r: number): Cp4Factors => ({ ...fitCp4(m, r, m.search.rng, m.search.gemm), requested: r });
  const r = cpEnergyRank({ limit, even, fit, fits, err2: (m.weightErr2 ??= new Map()), words: ['4-way CP rank', 'rank'] }, energy, lo);
  if (!isSkip(r) && !m.anchor && !wellDetermined(m, 0)) m.fitted = fits.get(r);
  return r;
}

/** Group j's patch statistics when well determined (about two rows per dimension at least): else a refit overfits them. */
function wellDetermined(m: ConvCp4Match, j: number): { gram: Float64Array; mean?: Float64Array } | undefined {
  return m.patches && m.samples >= MIN_ROWS_PER_DIM * m.s * m.geo.kernelSize ? { gram: m.patches.gram[j]!, mean: m.patches.mean?.[j] } : undefined;
}

/** A CP fitted to the whitened kernel, mapped back (each input-side factor by its mode's L⁻ᵀ); error and sensitivity of the chain as shipped. */
function unwhitenCp(f: CpNdConv, wl: readonly (Matrix | undefined)[], k: { data: Float32Array; shape: number[] }): CpNdConv & { whitened: true } {
  const [t, s, ...ks] = k.shape as number[];
  const R = f.rank;
  if (f.first.length === 0) return { ...f, whitened: true };
  const first = unwhitenMode(f.first, R, s!, 1, wl[0]!);
  const spatial = f.spatial.map((v, a) => (wl[a + 1] ? unwhitenMode(v, R, ks[a]!, 1, wl[a + 1]!) : v));
  return {
    ...f, first, spatial, relError: cpNdError(k.data, first, spatial, f.last, t!, s!, ks, R),
    sensitivity: cpNdSensitivity(first, spatial, f.last, t!, s!, ks, R), whitened: true,
  };
}

/** Group j's kernel [t, s, kh, kw]. */
const groupKernel = (m: ConvCp4Match, j: number): { data: Float32Array; shape: number[] } => ({ data: groupSlice(m.w, m.geo.group, j), shape: [m.t, m.s, ...m.geo.kernel] });

/** The weight-only CP of every group at `rank`, as one fit. */
function fitCp4(m: ConvCp4Match, rank: number, rng: Rng, gemm: SyncGemm | undefined, stable = true): CpNdConv {
  const parts = Array.from({ length: m.geo.group }, (_, j) => cpNdConv(groupKernel(m, j), rank, { rng, gemm, maxIter: ALS.maxIter, tol: ALS.tol, stable }));
  return parts.length === 1 ? parts[0]! : stackCp4(m, parts);
}

/** The groups' CPs as one: factors stacked, errors combined (linalg/conv-groups.ts), the most sensitive group's sensitivity. */
function stackCp4(m: ConvCp4Match, parts: (CpNdConv & { dataError?: number; dataDen?: number })[]): CpNdConv & { dataError?: number } {
  const e = combineGroupErrors(parts.map((f, j) => ({ relError: f.relError, energy: energyOf(groupSlice(m.w, m.geo.group, j)), dataError: f.dataError, dataDen: f.dataDen })));
  const worst = parts.reduce((a, f) => ((f.sensitivity?.ratio ?? 0) > (a.sensitivity?.ratio ?? 0) ? f : a), parts[0]!);
  const stabilized = parts.filter((f) => f.stabilized).map((f) => f.stabilized!);
  return {
    rank: parts[0]!.rank, first: stackGroups(parts.map((f) => f.first)), spatial: parts[0]!.spatial.map((_, a) => stackGroups(parts.map((f) => f.spatial[a]!))),
    last: stackGroups(parts.map((f) => f.last)),
    relError: e.relError, dataError: e.dataError, alsError: Math.max(...parts.map((f) => f.alsError)),
    converged: parts.every((f) => f.converged), iterations: Math.max(...parts.map((f) => f.iterations)),
    sensitivity: worst.sensitivity,
    stabilized: worstStabilized(stabilized),
  };
}

/** The CP at `rank` (linalg/cp4-conv.ts; per group on grouped convs), refitted on well-determined patch statistics; cached on the match. */
function factorize(m: ConvCp4Match, rank: number, cx: PassContext, stable = true): Cp4Factors | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (stable && m.fitted?.requested === rank) return shippable(m.fitted);
  const parts: GroupCp4[] = [];
  for (let j = 0; j < m.geo.group; j++) {
    const f = factorizeGroup(m, j, rank, cx, stable);
    if (isSkip(f)) return f;
    parts.push(f);
  }
  const f: GroupCp4 = parts.length === 1 ? parts[0]! : {
    ...stackCp4(m, parts), requested: rank, anchored: parts.some((p) => p.anchored) || undefined, whitened: parts.some((p) => p.whitened) || undefined,
    ...(parts.some((p) => p.dataSweeps) && { dataSweeps: Math.max(...parts.map((p) => p.dataSweeps ?? 0)) }),
    biasDelta: parts.every((p) => p.biasDelta) ? Float64Array.from(parts.flatMap((p) => [...p.biasDelta!])) : undefined,
  };
  // A rough fit (no refit under the sensitivity bound: the shrink search) is never shipped.
  if (stable) m.fitted = f;
  return stable ? shippable(f) : f;
}

/**
 * Group j's CP at `rank` before any fit on the statistics: on the kernel whitened mode by
 * mode when the match has that whitening (mapped back), else on the kernel itself.
 */
export function startFit(m: ConvCp4Match, j: number, rank: number, o: { rng: Rng; gemm?: SyncGemm; stable?: boolean }): CpNdConv & { whitened?: true } {
  const k = groupKernel(m, j);
  const wl = modeWhitening(m, j);
  const opts = { rng: o.rng, gemm: o.gemm, maxIter: ALS.maxIter, tol: ALS.tol, stable: o.stable };
  return wl ? unwhitenCp(cpNdConv({ data: Float32Array.from(whitenModes(k.data, k.shape, wl)), shape: k.shape }, rank, opts), wl, k) : cpNdConv(k, rank, opts);
}

/** Group j's CP at `rank`, its last factor refitted on the group's well-determined statistics. */
function factorizeGroup(m: ConvCp4Match, j: number, rank: number, cx: PassContext, stable: boolean): GroupCp4 | Skip {
  const k = groupKernel(m, j);
  let f: Cp4Factors;
  try {
    f = { ...startFit(m, j, rank, { rng: cx.rng, gemm: cx.gemm, stable }), requested: rank };
  } catch (e) {
    return skip(`4-way CP failed: ${(e as Error).message}`);
  }
  if (!Number.isFinite(f.alsError)) return skip('CP-ALS produced a non-finite fit');
  if (!Number.isFinite(f.relError)) return skip('4-way CP produced non-finite values');
  const { s, t } = m;
  const ks = m.geo.kernel;
  const anchor = m.anchors?.[j];
  const patches = wellDetermined(m, j);
  if (!anchor && !patches) return f;
  const wm = { rows: t, cols: s * m.geo.kernelSize, data: Float64Array.from(k.data) };
  const stats = { anchor: anchor && { patch: anchor, damp: ANCHOR_PATCH_DAMP }, patches };
  // Every factor refined on the data, as far as the work bound allows (never in rough fits).
  const sweeps = stable ? chainSweepCount(t, [s, ...ks], f.rank, m.geo.group) : 0;
  const { first, spatial, sweeps: kept } = refineCpNdOnData(f, wm, ks, stats, { sweeps, gemm: cx.gemm });
  const h = cpNdPrefix(first, spatial, s, ks, f.rank);
  const lf = fitLastFactor(wm, h, stats, cx.gemm)!;
  const last = Float32Array.from(lf.last);
  const out = {
    ...f, first, spatial, last, relError: cpNdError(k.data, first, spatial, last, t, s, ks, f.rank), dataError: lf.dataError, biasDelta: lf.biasDelta, anchored: lf.anchored,
    sensitivity: cpNdSensitivity(first, spatial, last, t, s, ks, f.rank), ...(kept > 0 && { dataSweeps: kept }),
  };
  if (!Number.isFinite(out.relError) || !Number.isFinite(lf.dataError)) return skip('4-way CP last-factor fit on calibration patches produced non-finite values');
  return m.geo.group === 1 ? out : { ...out, dataDen: outputEnergy(wm, { anchor, gram: patches?.gram }) };
}

/**
 * conv-tt — a Conv becomes 1x1 → (a conv along each spatial axis) → 1x1 through a
 * Tensor-Train decomposition of its kernel in the order (s, y1, …, yn, t), by TT-SVD
 * (Oseledets 2011); for a 2-D kernel W[t, s, y, x] ≈ Σ C[s, r1]·Y[r1, y, r2]·X[r2, x, r3]·Tf[r3, t].
 *
 * Before: Y = Conv(X, W [T, S, kh, kw], b; strides [sh, sw], pads [ph0, pw0, ph1, pw1],
 *                  dilations [dh, dw], auto_pad)
 * After:  Z1 = Conv(X,  Cᵀ [R1, S, 1, 1])
 *         Z2 = Conv(Z1, Y  [R2, R1, kh, 1]; strides [sh, 1], pads [ph0, 0, ph1, 0], dilations [dh, 1], auto_pad)
 *         Z3 = Conv(Z2, X  [R3, R2, 1, kw]; strides [1, sw], pads [0, pw0, 0, pw1], dilations [1, dw], auto_pad)
 *         Y  = Conv(Z3, Tfᵀ [T, R3, 1, 1], b)
 * With n spatial axes the train has n + 1 ranks and one conv per axis, conv a carrying
 * axis a's kernel, stride, dilation and pads (1-D: 1x1 → k → 1x1, Tucker-2's chain fitted
 * by TT-SVD; 3-D: 1x1 → kd×1×1 → 1×kh×1 → 1×1×kw → 1x1). Exact at full ranks: each
 * spatial conv runs its axis's window at every position of the others. No conv but the
 * last has a bias, so a zero-padded input stays zero through the chain and padding an
 * intermediate equals padding X. Under auto_pad SAME_* each axis is padded by its own
 * kernel, stride and dilation; an axis with kernel 1, stride 1 and dilation 1 gets no
 * padding, so the original auto_pad on every spatial conv gives the original per-axis pads.
 * Grouped convs (group g): each group's kernel [T/g, S/g, k…] is a TT of its own at the
 * same ranks (conv-split-groups.ts); the weights stack the groups' factors
 * ([g·R1, S/g, 1…], [g·R(a+1), R_a, …k_a…], [T, R(n+1), 1…]) and every conv takes group g.
 * Kernels with an extent 1 (1xk, kx1, …), 1x1 and depthwise convs are declined with the reason.
 *
 * The factorization is linalg/tt-nd.ts (n + 1 sequential truncated SVDs; the weight error
 * is exactly the energy they discard). With calibration patch statistics (well
 * determined: at least MIN_ROWS_PER_DIM rows per patch dimension) the TT-SVD runs on the
 * kernel whitened mode by mode, W ×_s L_Sᵀ ×_1 L_1ᵀ … (Σ ≈ Σ_S ⊗ Σ_1 ⊗ … by partial
 * traces, the partly compressed model's Σ when anchored; linalg/mode-whitening.ts), so its
 * truncations are weighted by the outputs, and each input-side core maps back by its own
 * mode's L⁻ᵀ (too few patches for that but at least MIN_ROWS_PER_DIM rows per input
 * channel: the channel mode alone, from the channel Gram, as conv-cp); then the last
 * factor is refitted on the patches by least squares (anchored statistics: fitted to the
 * original model's outputs given the partly compressed model's patches) and the mean
 * error moved into the bias.
 */
import { attrInt, intAttr } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { combineGroupErrors, energyOf, groupSlice, outputEnergy, stackGroups } from '../src/linalg/conv-groups.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { fitLastFactor, lastFactorFlops } from '../src/linalg/last-factor.js';
import { svdFlops } from '../src/linalg/svd.js';
import { alignRank, partialEnergyRank } from '../src/linalg/rank.js';
import { ttNdKernel, ttNdPrefix, ttNdSpectra, ttNdSvd, type TtNdConv } from '../src/linalg/tt-nd.js';
import type { NodeProto } from '../src/onnx/schema.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';
import { chainConvAttrs, convCost, convNode, type ConvGeometry } from '../src/rewrite/conv-geometry.js';
import { acceptsUnless } from '../src/rewrite/conv-split.js';
import {
  axisKernel, axisLetters, axisPlacement, chainMismatchNd, composeGroups, groupedSplitDeclines, matchModeWhitened, modeWhitening, type ModeWhitenedMatch,
} from '../src/rewrite/conv-split-groups.js';
import { ANCHOR_PATCH_DAMP, MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { unwhitenMode, whitenModes } from '../src/linalg/mode-whitening.js';
import { relativeDiff, type Matrix } from '../src/linalg/matrix.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { vbmfRank, type RankPolicy } from '../src/rewrite/rank-policy.js';
import { correctedBias } from './conv-tucker2.js';

/**
 * Why TT's win under auto is timed against Tucker-2 where latency counts. Measured as conv-cp4's
 * CP4_SLOW_PATH (ORT-node, 1 thread, 3x3 convs of 64–256 channels at 14²–56², equal params
 * and MACs as Tucker-2 [r, r], r = C/8 … C/2): TT [k, k, k] took 0.90–1.75x Tucker-2's time
 * (median 1.11x): four convs where Tucker-2 has three, at the same MACs.
 */
export const TT_SLOW_PATH = 'measured 0.90–1.75x (median 1.11x) the time of Tucker-2 at equal params and MACs';

export interface ConvTtMatch extends ModeWhitenedMatch {
  /** Per group, spectra of the n + 1 TT unfoldings [s·k1…k_i, k(i+1)…kn·t], computed on first use. */
  spectra?: { sigma: Float64Array; total: number }[][];
  /** The last factorization, reused by apply when the ranks match. */
  fitted?: TtFit;
}

/** A TT (last factor possibly fitted on patch statistics) and the ranks it was asked for. */
interface TtFit extends TtNdConv {
  key: string;
  dataError?: number;
  biasDelta?: Float64Array;
  anchored?: boolean;
  /** The TT-SVD ran on the kernel whitened mode by mode (linalg/mode-whitening.ts): every mode, or the channel mode alone. */
  whitened?: 'modes' | 'channel';
}

/** One group's fit; `dataDen`: its output energy on the statistics (grouped convs). */
type GroupTt = Omit<TtFit, 'key'> & { dataDen?: number };

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines = groupedSplitDeclines('', 'one spatial conv is enough, conv-tucker2 handles it', true, true);

/** Each TT unfolding's size, per group (s = S/g, t = T/g): [s·k1…k_i, k(i+1)…kn·t], i = 0…n. */
function unfoldings(m: { s: number; t: number; geo: ConvGeometry }): [number, number][] {
  const k = m.geo.kernel;
  const K = k.reduce((a, b) => a * b, 1);
  const out: [number, number][] = [];
  let rows = m.s;
  for (let i = 0; i <= k.length; i++) {
    out.push([rows, (m.s * K * m.t) / rows]);
    if (i < k.length) rows *= k[i]!;
  }
  return out;
}

/** Largest useful rank of each step: the smaller side of its unfolding. */
const limits = (m: { s: number; t: number; geo: ConvGeometry }): number[] => unfoldings(m).map(([r, c]) => Math.min(r, c));

/**
 * Neighbouring TT ranks bound each other: R(a+1) ≤ R_a·k_a and R_a ≤ R(a+1)·k_a (an
 * unfolding's rank is at most its neighbour's times the mode between). Past these a rank
 * cannot lower the error, so they are lowered to fit.
 */
function consistent(r: readonly number[], kernel: readonly number[]): number[] {
  const out = [...r];
  for (let a = 0; a < kernel.length; a++) out[a + 1] = Math.min(out[a + 1]!, out[a]! * kernel[a]!);
  for (let a = kernel.length - 1; a >= 0; a--) out[a] = Math.min(out[a]!, out[a + 1]! * kernel[a]!);
  return out;
}

export const convTt: LayerPass<ConvTtMatch, 'tt'> = {
  name: 'conv-tt',
  method: 'tt',
  ops: ['Conv'],
  // Below conv-tucker2, conv-cp and conv-spatial-svd: routed to last but one; under auto it
  // challenges the choice so far at equal cost (`challenge`).
  benefit: -2,
  rankNames: ['r1 (input side)', 'r2 (after the first spatial conv)', 'r3 (after the second)', 'r4 (after the third)', 'r5 (after the fourth)'],

  accepts: acceptsUnless(declines),

  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext): Float32Array | string {
    // Leading dims g·R1 … g·R(n+1) (s = S/g inputs per group).
    const G = attrInt(f.original, 'group', 1);
    const bad = chainMismatchNd(chain, factors, f.weightDims, ([T, s, ...k], lead) => {
      const ones = k.map(() => 1);
      return [[lead[0]!, s!, ...ones], ...k.map((_, a) => [lead[a + 1] ?? 0, (lead[a] ?? 0) / G, ...axisKernel(k, a)]), [T!, (lead[k.length] ?? 0) / G, ...ones]];
    });
    if (bad) return bad;
    const [T, s, ...k] = f.weightDims as number[];
    const ranks = factors.slice(0, k.length + 1).map((x) => x.dims[0]! / G);
    return composeGroups(factors.map((x) => x.read(ext)), G, (p) => ttNdKernel(p[0]!, p.slice(1, -1), p.at(-1)!, T! / G, s!, k, ranks));
  },

  match: (layer: LayerInfo, cx: PassContext): ConvTtMatch | Skip => matchModeWhitened(layer, cx, declines, 'tensor-train'),

  rankLimits: (m) => limits(m),

  checkRanks(m: ConvTtMatch, ranks: readonly number[]): string | undefined {
    const k = m.geo.kernel;
    for (let a = 0; a < k.length; a++) {
      const [r, q] = [ranks[a]!, ranks[a + 1]!];
      if (q > r * k[a]! || r > q * k[a]!) {
        const what = k.length === 2 ? (a === 0 ? 'rows' : 'columns') : `extent ${k[a]} on axis ${a + 1}`;
        return `ranks [${ranks.join(', ')}] need r${a + 2} ≤ r${a + 1}·${k[a]} and r${a + 1} ≤ r${a + 2}·${k[a]} (the kernel has ${k.length === 2 ? `${k[a]} ${what}` : what})`;
      }
    }
    return undefined;
  },

  /**
   * Ranks of the n + 1 TT unfoldings ([s·k1…k_i, k(i+1)…kn·t], per group), each as for an
   * SVD pair of that matrix: fixed r → r for every one; energy e → each unfolding's energy
   * rank (as conv-tucker2 reads its unfoldings; the TT-SVD error² is then at most
   * (n + 1)·(1 − e)·‖W‖², Oseledets 2011); vbmf → EVBMF of each; the largest over the
   * groups; ratio ρ → the largest common fraction α of the limits with params ≤ ρ × the
   * dense conv's. Clamped to the limits, aligned, then lowered to consistent neighbours (checkRanks).
   */
  chooseRanks(m: ConvTtMatch, policy: RankPolicy): number[] | Skip {
    const lim = limits(m);
    let raw: number[];
    switch (policy.kind) {
      case 'fixed':
        if (!isRank(policy.rank)) return skip(notARank(policy.rank));
        raw = lim.map(() => policy.rank);
        break;
      case 'energy':
        raw = maxOverGroups(spectraOf(m).map((sp) => sp.map((x, i) => partialEnergyRank(x.sigma, x.total, policy.energy) ?? lim[i]!)));
        break;
      case 'vbmf': {
        const dims = unfoldings(m);
        raw = maxOverGroups(spectraOf(m).map((sp) => sp.map((x, i) => vbmfRank(x.sigma, x.total, dims[i]![0], dims[i]![1]))));
        break;
      }
      case 'ratio':
        raw = ratioRanks(m, policy.ratio);
        break;
    }
    const aligned = raw.map((r, i) => alignRank(Math.min(r, lim[i]!), policy.align, lim[i]!));
    const r = consistent(aligned, m.geo.kernel);
    if (r.some((x) => x <= 0)) return skip(`rank 0 (ranks ${r.join(', ')}): the kernel has no low-rank structure worth keeping`);
    return r;
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: ttCost(m.geo, ranks) }),

  // Under auto: along ranks [k, …, k] (clamped, lowered to consistent neighbours, as --rank k
  // writes them) at the largest k no larger and no costlier than the choice so far, by
  // error (where latency counts a win is timed: TT_SLOW_PATH). A 1-D
  // train is the preferred pass's own chain (Tucker-2's 1x1 → k → 1x1): nothing to compare.
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convTt.match(layer, cx);
    if (isSkip(m) || m.geo.spatial === 1) return undefined;
    const lim = limits(m);
    const ranksOf = (k: number): number[] => consistent(lim.map((l) => Math.min(k, l)), m.geo.kernel);
    const spec = { pass: convTt, match: m, limit: Math.max(...lim), patchDim: m.s * m.geo.kernelSize, fixedRank: true, ranksOf, slowPath: TT_SLOW_PATH };
    return challengeAtEqualCost(layer, spec, preferred, ranks, cx, policy);
  },

  // Per group: TT-SVD's full SVDs, of [s, K·t] then of each remainder [R_i·k_i, …·t]; the last factor's fit on statistics.
  fitWork(m: ConvTtMatch, ranks: readonly number[]): number {
    const ks = m.geo.kernel;
    let after = m.geo.kernelSize;
    let w = svdFlops(m.s, after * m.t);
    for (let i = 0; i < ks.length; i++) {
      after /= ks[i]!;
      w += svdFlops(Math.min(ranks[i]!, m.s * m.geo.kernelSize) * ks[i]!, after * m.t);
    }
    const stats = m.patches || m.anchors ? lastFactorFlops(ranks.at(-1)!, m.s * m.geo.kernelSize) : 0;
    return m.geo.group * (w + stats);
  },

  estimate(m: ConvTtMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorize(m, ranks, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvTtMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo } = m;
    const f = factorize(m, ranks, cx);
    if (isSkip(f)) return f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const R = f.ranks;
    const G = geo.group;
    const k = geo.kernel;
    const ones = k.map(() => 1);
    const letters = axisLetters(k.length);
    const names = ['s', ...letters, 't'].map((x) => derivedName(cx, n, `lr_tt_${x}`));
    g.addInitializer(makeFloatTensor(names[0]!, [G * R[0]!, m.s, ...ones], f.first, m.dataType));
    k.forEach((_, a) => g.addInitializer(makeFloatTensor(names[a + 1]!, [G * R[a + 1]!, R[a]!, ...axisKernel(k, a)], f.cores[a]!, m.dataType)));
    g.addInitializer(makeFloatTensor(names.at(-1)!, [geo.T, R.at(-1)!, ...ones], f.last, m.dataType));
    const z = k.map((_, i) => derivedName(cx, n, `lr_z${i + 1}`)).concat(derivedName(cx, n, `lr_z${k.length + 1}`));
    const refit = f.dataError === undefined ? '' : f.anchored ? ', last factor fitted to the original outputs (anchored)' : ', last factor refitted on calibration patches';
    const aware = (f.whitened === 'modes' ? ', whitened TT-SVD' : f.whitened === 'channel' ? ', whitened TT-SVD (input channels only)' : '') + refit;
    const per = G > 1 ? ` per group (${G} groups)` : '';
    const doc = docString('conv-tt', `ranks [${R.join(', ')}]${per} of ${geo.T}x${geo.S}x${k.join('x')} (weight rel. error ${f.relError.toExponential(2)}${aware})`);
    const placement = axisPlacement(n, k.length);
    const grouped = G > 1 ? [intAttr('group', G)] : [];
    const node = (i: number) => derivedName(cx, n, `lr_${String.fromCharCode(97 + i)}`);
    const nodes = [
      convNode(node(0), n.input[0]!, names[0]!, z[0]!, chainConvAttrs(ones, G), undefined, doc),
      ...k.map((_, a) => convNode(node(a + 1), z[a]!, names[a + 1]!, z[a + 1]!, chainConvAttrs(axisKernel(k, a), 1, placement[a]).concat(grouped), undefined, doc)),
      convNode(node(k.length + 1), z[k.length]!, names.at(-1)!, n.output[0]!, chainConvAttrs(ones, G), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/**
 * Params S·R1 + g·Σ R_a·R(a+1)·k_a + R(n+1)·T (ranks per group, g groups). MACs per output
 * position: the first 1x1 runs at the input resolution (∏strides input positions per
 * output position); axis a's conv runs at the output positions of axes up to a and at
 * the input positions of those after it (∏ of their strides); the last at the output.
 */
export function ttCost(geo: ConvGeometry, ranks: readonly number[]): Cost {
  const k = geo.kernel;
  const first = geo.S * ranks[0]!;
  const last = ranks[k.length]! * geo.T;
  let params = first;
  let macs = first * geo.strideFactor;
  k.forEach((ka, a) => {
    const p = geo.group * ranks[a]! * ranks[a + 1]! * ka;
    params += p;
    macs += p * geo.strides.slice(a + 1).reduce((x, y) => x * y, 1);
  });
  return { params: params + last, macsPerPosition: macs + last };
}

function spectraOf(m: ConvTtMatch): { sigma: Float64Array; total: number }[][] {
  m.spectra ??= Array.from({ length: m.geo.group }, (_, j) => ttNdSpectra(groupKernel(m, j)));
  return m.spectra;
}

/** Group j's kernel [t, s, k…]. */
function groupKernel(m: ConvTtMatch, j: number): { data: Float32Array; shape: number[] } {
  return { data: groupSlice(m.w, m.geo.group, j), shape: [m.t, m.s, ...m.geo.kernel] };
}

/** Each step's largest rank over the groups. */
const maxOverGroups = (per: number[][]): number[] => per[0]!.map((_, i) => Math.max(...per.map((r) => r[i]!)));

/** Ranks α·limits (each ≥ 1) for the largest α ∈ (0, 1] whose params stay within ρ × the dense conv's (bisection on α). */
function ratioRanks(m: ConvTtMatch, ratio: number): number[] {
  const lim = limits(m);
  const budget = ratio * convCost(m.geo).params;
  const at = (a: number): number[] => lim.map((l) => Math.max(1, Math.floor(a * l)));
  let lo = 0;
  let hi = 1;
  if (ttCost(m.geo, at(1)).params <= budget) return at(1);
  for (let i = 0; i < 50; i++) {
    const mid = (lo + hi) / 2;
    if (ttCost(m.geo, at(mid)).params <= budget) lo = mid; else hi = mid;
  }
  return at(lo);
}

/** The TT at `ranks` (linalg/tt-nd.ts; per group on grouped convs), the last factor refitted on well-determined patch statistics; cached on the match. */
function factorize(m: ConvTtMatch, ranks: readonly number[], cx: PassContext): TtFit | Skip {
  const n = m.geo.spatial;
  if (ranks.length !== n + 1 || !ranks.every(isRank)) return skip(`ranks [${ranks.join(', ')}] are not ${n + 1} positive integers`);
  const key = ranks.join(',');
  if (m.fitted?.key === key) return m.fitted;
  const parts: GroupTt[] = [];
  for (let j = 0; j < m.geo.group; j++) {
    const f = factorizeGroup(m, j, ranks, cx);
    if (isSkip(f)) return f;
    parts.push(f);
  }
  const fit = parts.length === 1 ? { ...parts[0]!, key } : { ...stackTt(m, parts), key };
  m.fitted = fit;
  return fit;
}

/** Group j's TT with its last factor refitted on the group's statistics (well determined: as conv-cp). */
function factorizeGroup(m: ConvTtMatch, j: number, ranks: readonly number[], cx: PassContext): GroupTt | Skip {
  const { s, t } = m;
  const ks = m.geo.kernel;
  const k = groupKernel(m, j);
  let f: TtNdConv & { whitened?: 'modes' | 'channel' };
  const wl = modeWhitening(m, j);
  try {
    f = ttNdSvd(wl ? { data: whitenModes(k.data, k.shape, wl), shape: k.shape } : k, ranks, { gemm: cx.gemm });
    if (wl) f = unwhitenTt(f, wl, k, cx);
  } catch (e) {
    return skip(`TT-SVD failed: ${(e as Error).message}`);
  }
  if (!Number.isFinite(f.relError)) return skip('TT-SVD produced non-finite values');
  const D = s * m.geo.kernelSize;
  // Anchored moments when collected; else a patch covariance from fewer than about two rows
  // per dimension is rank-deficient and a refit on it overfits the calibration set.
  const anchor = m.anchors?.[j];
  const patches = m.patches && m.samples >= MIN_ROWS_PER_DIM * D ? { gram: m.patches.gram[j]!, mean: m.patches.mean?.[j] } : undefined;
  if (!anchor && !patches) return f;
  const h = ttNdPrefix(f.first, f.cores, s, ks, f.ranks, cx.gemm);
  const wm = { rows: t, cols: D, data: Float64Array.from(k.data) };
  const lf = fitLastFactor(wm, h, { anchor: anchor && { patch: anchor, damp: ANCHOR_PATCH_DAMP }, patches }, cx.gemm)!;
  const last = Float32Array.from(lf.last);
  const w = ttNdKernel(f.first, f.cores, last, t, s, ks, f.ranks, cx.gemm);
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) { num += (k.data[i]! - w[i]!) ** 2; den += k.data[i]! ** 2; }
  const fit = { ...f, last, relError: den === 0 ? 0 : Math.sqrt(num / den), dataError: lf.dataError, biasDelta: lf.biasDelta, anchored: lf.anchored };
  if (!Number.isFinite(fit.relError) || !Number.isFinite(lf.dataError)) return skip('TT last-factor fit on calibration patches produced non-finite values');
  return m.geo.group === 1 ? fit : { ...fit, dataDen: outputEnergy(wm, { anchor, gram: patches?.gram }) };
}

/** A TT fitted to the whitened kernel, mapped back (each input-side factor by its mode's L⁻ᵀ), its weight error on `k` itself. */
function unwhitenTt(f: TtNdConv, wl: readonly (Matrix | undefined)[], k: { data: Float32Array; shape: number[] }, cx: PassContext): TtNdConv & { whitened: 'modes' | 'channel' } {
  const [t, s, ...ks] = k.shape as number[];
  const R = f.ranks;
  const first = unwhitenMode(f.first, R[0]!, s!, 1, wl[0]!);
  const cores = f.cores.map((c, a) => (wl[a + 1] ? unwhitenMode(c, R[a + 1]! * R[a]!, ks[a]!, 1, wl[a + 1]!) : c));
  const w = ttNdKernel(first, cores, f.last, t!, s!, ks, R, cx.gemm);
  return { ...f, first, cores, relError: relativeDiff(k.data, w), whitened: wl.every((l) => l) ? 'modes' : 'channel' };
}

/** The groups' TTs as one: factors stacked, errors combined (linalg/conv-groups.ts). */
function stackTt(m: ConvTtMatch, parts: GroupTt[]): Omit<TtFit, 'key'> {
  const energies = parts.map((_, j) => energyOf(groupSlice(m.w, m.geo.group, j)));
  const e = combineGroupErrors(parts.map((f, j) => ({ relError: f.relError, energy: energies[j]!, dataError: f.dataError, dataDen: f.dataDen })));
  const biasDelta = parts.every((f) => f.biasDelta) ? Float64Array.from(parts.flatMap((f) => [...f.biasDelta!])) : undefined;
  const total = energies.reduce((a, x) => a + x, 0);
  const discarded = parts[0]!.discarded.map((_, i) => (total > 0 ? parts.reduce((a, f, j) => a + f.discarded[i]! * energies[j]!, 0) / total : 0));
  return {
    ranks: parts[0]!.ranks, first: stackGroups(parts.map((f) => f.first)), cores: parts[0]!.cores.map((_, a) => stackGroups(parts.map((f) => f.cores[a]!))),
    last: stackGroups(parts.map((f) => f.last)), relError: e.relError, dataError: e.dataError, biasDelta, anchored: parts.some((f) => f.anchored) || undefined, discarded,
    whitened: parts.find((f) => f.whitened)?.whitened,
  };
}

/**
 * convtranspose-svd — a group-1 ConvTranspose becomes a 1x1 Conv and a thinner ConvTranspose
 * through a truncated SVD of its weight read as the matrix [S, T·∏k] (its mode-S unfolding,
 * which is the stored layout). A 1x1 stride-1 ConvTranspose is a per-position matrix
 * product, and its pair is two 1x1 Convs.
 *
 * Before: Y = ConvTranspose(X, W [S, T, k…], b; strides, pads, dilations, output_padding,
 *                           output_shape, auto_pad)
 * After:  Z = Conv(X, R [r, S, 1…])                                          R = (U_r Σ_r^½)ᵀ
 *         Y = ConvTranspose(Z, L [r, T, k…], b; strides, pads, dilations, output_padding,
 *                           output_shape, auto_pad)                          L = Σ_r^½ V_rᵀ
 * with W [S, T·K] ≈ U_r Σ_r V_rᵀ, i.e. W[σ, τ, κ] ≈ Σ_ρ R[ρ, σ]·L[ρ, τ, κ]. Each input
 * position q scatters Σ_σ W[σ, ·, ·]·X[σ](q) into its window; with the split, Z(q) =
 * R·X(q) is formed first and L scatters it through the same window, so the output (extent,
 * padding, output_padding, output_shape, auto_pad included) is the same map at rank r.
 * The stride and every other spatial attribute stay on the right factor, which runs at the
 * input resolution like the original; the 1x1 Conv before it has no window at all.
 * Plain 1x1 (kernel 1, stride 1, no pads, output_padding or output_shape): the right
 * factor is the 1x1 Conv [T, r, 1…] = Lᵀ instead: y = Wᵀ·x per position, as conv1x1-svd.
 *
 * Cost per input position r·S + r·T·∏k against S·T·∏k: it pays when r < S·T·K/(S + T·K),
 * the SVD break-even of the [S, T·K] matrix, so the SVD rank policies apply unchanged.
 * Grouped ConvTranspose is left to convtranspose-tucker2 (declined here).
 * Data-aware: X enters on the rows side of [S, T·K] (each tap is y = W_κᵀ·x), so with the
 * input-channel Gram of X (statistics of kind 'conv' over X's positions, as a 1x1 conv on
 * X collects them) the pair is the whitened SVD on the rows side, and with anchored
 * statistics the anchored one (svd-pair.ts). Output side: with the moments of the
 * scatter patches in the statistics (convtranspose-patches.ts: the output at one position
 * is Wc·P, Wc [T, S·K] the Conv layout), the right factor L [r, T, K] is refitted by least
 * squares on them given R (Ŵc[τ, σ·K + κ] = Σ_ρ L[ρ, τ, κ]·R[ρ, σ]: the B-step of
 * linalg/spatial-svd-als.ts with the taps as its columns; anchored: on the anchored patch
 * moments), and the mean output error (W − Ŵ)·E[P], the best constant per output channel,
 * goes into the bias. Without them the pair is uncentered and has no bias correction.
 */
import { attrInt } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray, relativeDiff, type Matrix } from '../src/linalg/matrix.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import { chainConvAttrs, convNode, finiteWeight } from '../src/rewrite/conv-geometry.js';
import { composeConvTranspose } from '../src/rewrite/convtranspose-compose.js';
import {
  convTransposeCost, convTransposeLayerGeometry, convTransposeNode, isPlainPointwise, transposePlacementAttrs, transposeSvdCost,
  type ConvTransposeGeometry,
} from '../src/rewrite/convtranspose-geometry.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type BoundPass, type Challenge, type LayerPass, type MatchBase, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { bound } from '../src/rewrite/registry.js';
import { SvdCache, svdPairFactors, svdPairRank, WHITEN_DAMP, whiteningFor } from '../src/rewrite/svd-pair.js';
import type { AnchoredPatch } from '../src/linalg/anchored.js';
import { bStep, objectiveOf, rowBlocks } from '../src/linalg/spatial-svd-als.js';
import { dataErrors } from '../src/linalg/spatial-svd.js';
import { anchoredPatches, ANCHOR_PATCH_DAMP, patchBlocks } from '../src/rewrite/conv-stats.js';
import { swapChannelRoles } from '../src/rewrite/convtranspose-geometry.js';
import { correctedBias } from './conv-tucker2.js';

export interface ConvTransposeSvdMatch extends MatchBase {
  geo: ConvTransposeGeometry;
  /** W as the matrix [S, T·K]. */
  svd: SvdCache;
  /** Scatter-patch moments (convtranspose-patches.ts), when the statistics carry them: the right factor's refit. */
  patches?: { gram: Float64Array; mean?: Float64Array; count?: number };
  /** Anchored scatter-patch moments, when the statistics carry them (used instead of `patches`). */
  anchorPatch?: AnchoredPatch;
  /** Pairs refitted on the patches, by rank. */
  refits?: Map<number, PairFit>;
}

/** A pair as written: R [r, S], L [r, T·K] (or [T, r] transposed for a plain 1x1), errors and the bias correction. */
interface PairFit { first: Float32Array; right: Float32Array; relError: number; dataError?: number; biasDelta?: Float64Array; refitted: boolean }

/** [rows, cols] row-major → [cols, rows]. */
function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

export const convTransposeSvd: LayerPass<ConvTransposeSvdMatch, 'svd'> = {
  name: 'convtranspose-svd',
  method: 'svd',
  ops: ['ConvTranspose'],
  // Below convtranspose-tucker2, which declines group-1 1x1s: auto sends those here and keeps Tucker-2 for k×k.
  benefit: 0,

  accepts: (layer) => (attrInt(layer.node, 'group', 1) === 1 ? true : skip('applies to group-1 ConvTranspose only')),

  compose: composeConvTranspose,

  challenge: (layer, preferred, ranks, cx) => challengeSvd(layer, preferred, ranks, cx),

  match(layer: LayerInfo, cx: PassContext): ConvTransposeSvdMatch | Skip {
    const c = convTransposeLayerGeometry(layer);
    if (isSkip(c)) return c;
    const { geo, dataType } = c;
    if (geo.group !== 1) return skip(`grouped ConvTranspose (group ${geo.group}) is not decomposed by convtranspose-svd (convtranspose-tucker2 handles it)`);
    const data = finiteWeight(layer, cx);
    if (isSkip(data)) return data;
    const w = fromArray(geo.S, geo.T * geo.kernelSize, data);
    const whiten = whiteningFor(cx.stats?.get(layer.name), 'rows', geo.S);
    const anchorPatch = anchoredPatches(cx, layer.name, geo)?.[0];
    const p = anchorPatch ? undefined : patchBlocks(cx, layer.name, geo);
    const patches = p && { gram: p.gram[0]!, mean: p.mean?.[0], count: cx.stats?.get(layer.name)?.patchCount };
    return {
      layer, node: layer.node, graph: layer.graph, dataType, geo, svd: new SvdCache(w, 0, whiten, cx.gemm), ...(patches && { patches }), ...(anchorPatch && { anchorPatch }),
    };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  rankLimits: (m) => [Math.min(m.svd.w.rows, m.svd.w.cols)],

  cost: (m, ranks) => ({ before: convTransposeCost(m.geo), after: transposeSvdCost(m.geo, ranks[0]!) }),

  estimate(m: ConvTransposeSvdMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = pairAt(m, ranks[0]!, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvTransposeSvdMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0]!;
    const { node: n, graph: g, geo } = m;
    const S = m.svd.w.rows;
    const f = pairAt(m, r, cx);
    if (isSkip(f)) return f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const ones = new Array<number>(geo.spatial).fill(1);
    const plain = isPlainPointwise(geo);
    const nameR = derivedName(cx, n, 'lr_r');
    const nameL = derivedName(cx, n, 'lr_l');
    g.addInitializer(makeFloatTensor(nameR, [r, S, ...ones], f.first, m.dataType));
    if (plain) g.addInitializer(makeFloatTensor(nameL, [geo.T, r, ...ones], transposed(f.right, r, geo.T), m.dataType));
    else g.addInitializer(makeFloatTensor(nameL, [r, geo.T, ...geo.kernel], f.right, m.dataType));
    const z = derivedName(cx, n, 'lr_z');
    const aware = (m.svd.whiten ? (m.svd.whiten.cross ? ', anchored' : ', data-aware') : '')
      + (f.refitted ? `, right factor ${m.anchorPatch ? 'fitted to the original outputs' : 'refitted'} on calibration patches` : '');
    const doc = docString('convtranspose-svd', `rank ${r} of ${S}x${geo.T}x${geo.kernel.join('x')} (weight rel. error ${f.relError.toExponential(2)}${aware})`);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0]!, nameR, z, chainConvAttrs(ones, 1), undefined, doc),
      plain
        ? convNode(derivedName(cx, n, 'lr_b'), z, nameL, n.output[0]!, chainConvAttrs(ones, 1), bias, doc)
        : convTransposeNode(derivedName(cx, n, 'lr_b'), z, nameL, n.output[0]!, chainConvAttrs(geo.kernel, 1, transposePlacementAttrs(n)), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/**
 * The pair at rank r: the (whitened) SVD pair, its right factor refitted on the scatter
 * patches when the statistics carry them (see the file's comment); refits cached by rank.
 */
function pairAt(m: ConvTransposeSvdMatch, r: number, cx: PassContext): PairFit | Skip {
  const { rows: S, cols: TK } = m.svd.w;
  if (!Number.isInteger(r) || r < 1 || r > Math.min(S, TK)) return skip(`rank ${r} is out of range for a ${S}x${TK} unfolding`);
  const f = svdPairFactors(m.svd, r);
  if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
  // f.left is U_r Σ_r^½ [S, r]; the first 1x1 Conv wants it as [r, S].
  const first = transposed(f.left, S, r);
  if (!m.patches && !m.anchorPatch) return { first, right: f.right, relError: f.relError, dataError: f.dataError, refitted: false };
  const hit = m.refits?.get(r);
  if (hit) return hit;
  const { T, kernelSize: K } = m.geo;
  const D = S * K;
  // Wc [T, S·K]: the ConvTranspose weight [S, T, K] with the channel roles swapped.
  const w: Matrix = { rows: T, cols: D, data: Float64Array.from(swapChannelRoles(m.svd.w.data, S, T, K, 1)) };
  const stats = m.anchorPatch ? { anchor: m.anchorPatch, damp: ANCHOR_PATCH_DAMP } : { patches: m.patches, damp: WHITEN_DAMP };
  const obj = objectiveOf(w, stats)!;
  const a: Matrix = { rows: r, cols: S, data: Float64Array.from(first) };
  // L [r, T·K] (row ρ, column τ·K + κ): the ConvTranspose weight [r, T, k…] as stored.
  const b = bStep(a, obj, rowBlocks(obj.g, S, K), T, K, [], cx.gemm);
  const wHat = new Float64Array(T * D);
  for (let t = 0; t < T; t++) for (let rho = 0; rho < r; rho++) for (let k = 0; k < K; k++) {
    const v = b.data[rho * T * K + t * K + k]!;
    if (v !== 0) for (let sg = 0; sg < S; sg++) wHat[t * D + sg * K + k] += v * a.data[rho * S + sg]!;
  }
  const e = dataErrors(w, { rows: T, cols: D, data: wHat }, stats, cx.gemm);
  // In f.right's layout [r, T·K] (apply writes a plain 1x1's transposed).
  const fit: PairFit = { first, right: Float32Array.from(b.data), relError: relativeDiff(w.data, wHat), ...e, refitted: true };
  if (!Number.isFinite(fit.relError) || (fit.dataError !== undefined && !Number.isFinite(fit.dataError))) return skip('right factor refit on calibration patches produced non-finite values');
  (m.refits ??= new Map()).set(r, fit);
  return fit;
}

/**
 * Under auto, against convtranspose-tucker2 at its ranks: the smallest SVD rank whose
 * weight error (Eckart–Young, from the spectrum) is at most the Tucker-2 error, taken when
 * it costs no more parameters and MACs. On a kernel whose structure is in the input
 * channels alone (e.g. a k=stride upsampler), the pair skips the Tucker-2's last 1x1,
 * which runs at the output resolution.
 */
function challengeSvd(layer: LayerInfo, preferred: BoundPass, ranksT: readonly number[], cx: PassContext): Challenge | undefined {
  if (!preferred.estimate) return undefined;
  const m = convTransposeSvd.match(layer, cx);
  if (isSkip(m)) return undefined;
  const ct = preferred.cost(ranksT);
  const { rows, cols } = m.svd.w;
  // The largest rank within the Tucker-2's cost (params and MACs have the same count here).
  const per = transposeSvdCost(m.geo, 1);
  const most = Math.min(rows, cols, Math.floor(Math.min(ct.after.params / per.params, ct.after.macsPerPosition / per.macsPerPosition)));
  if (most < 1) return undefined;
  const fT = preferred.estimate(ranksT, cx);
  if (isSkip(fT)) return undefined;
  // Both sides on weight error: a data-aware pair's own spectrum is of the whitened matrix.
  const spec = (m.svd.whiten ? new SvdCache(m.svd.w, 0, undefined, cx.gemm) : m.svd).spectrum(most);
  let kept = 0;
  let r = 0;
  for (let i = 0; i < Math.min(most, spec.sigma.length); i++) {
    kept += spec.sigma[i]! * spec.sigma[i]!;
    // Equal within 2% (or both below 1e-6, where fp32 factors stop) counts as equal.
    if (Math.sqrt(Math.max(0, spec.total - kept) / (spec.total || 1)) <= fT.relError * 1.02 + 1e-6) { r = i + 1; break; }
  }
  if (r === 0) return { note: `${preferred.method} ${ranksT.join(',')} err ${fT.relError.toExponential(2)}: no svd of rank ≤ ${most} (its cost) fits as well` };
  const f = svdPairFactors(m.svd, r);
  const note = `${preferred.method} ${ranksT.join(',')} err ${fT.relError.toExponential(2)} vs svd ${r} err ${f.relError.toExponential(2)}`;
  return Number.isFinite(f.relError) ? { note, use: { bound: bound(convTransposeSvd, m), ranks: [r] } } : { note };
}

/**
 * The split passes (conv-spatial-svd, conv-tt, conv-cp4) on grouped convs and, for TT and
 * CP-4, on any number of spatial axes (spatial SVD: 2-D and 3-D). A conv of g groups is g independent convs on slices
 * of the channels, so each group's kernel [T/g, S/g, k…] is factorized on its own at the
 * same ranks and the chain's convs all take group g (their weights stack the groups'
 * factors along the output channels). A chain with one conv per spatial axis carries each
 * axis's stride, dilation and pads on that axis's conv. This is the screen that lets them
 * through, the match's per-group anchored statistics, the per-axis placement and the
 * compose helpers.
 */
import { attrInts, attrString, intsAttr, stringAttr } from '../graph/attrs.js';
import type { LayerInfo } from '../graph/layers.js';
import type { AttributeProto, NodeProto } from '../onnx/schema.js';
import { isDepthwise } from './conv-geometry.js';
import { anchoredPatches, channelBlocks, MIN_ROWS_PER_DIM, perModeWhitening, type AnchoredPatch } from './conv-stats.js';
import type { Matrix } from '../linalg/matrix.js';
import { matchSplitConv, type Declines, type SplitConvMatch } from './conv-split.js';
import { isSkip, skip, type ChainFactor, type PassContext, type Skip } from './pass.js';

/**
 * The screen of a split pass (conv-split.ts's Declines): every kernel extent > 1, not
 * depthwise (grouped convs allowed); 2-D only unless `anyAxes` (a chain of one conv per axis). `otherAxes` says
 * why other than 2-D convs are declined, `oneAxis` what becomes of kernels with an extent 1
 * (1xk/kx1); with `pointwise` a 1x1 kernel has a reason of its own.
 */
export function groupedSplitDeclines(otherAxes: string, oneAxis: string, pointwise: boolean, anyAxes = false): Declines {
  return (geo) => {
    if (!anyAxes && geo.spatial !== 2) return skip(`applies to 2-D convs only (this one has ${geo.spatial} spatial ${geo.spatial === 1 ? 'axis' : 'axes'}: ${otherAxes})`);
    const k = geo.kernel;
    const shown = k.join('x');
    if (pointwise && k.every((x) => x === 1)) return skip(`does not apply to ${k.length === 2 ? '1x1 convs' : `pointwise convs (kernel ${shown})`} (a matrix: conv1x1-svd handles it)`);
    if (k.some((x) => x === 1)) return skip(`applies to kernels with ${k.length === 2 ? 'kh, kw' : 'every extent'} > 1 only (${shown}: ${oneAxis})`);
    if (isDepthwise(geo)) return skip(`does not apply to depthwise convs (one input channel per group, group ${geo.group}: nothing to gain)`);
    return undefined;
  };
}

/**
 * The original's strides, dilations, pads and auto_pad split by axis for a chain of one
 * conv per spatial axis: conv a gets axis a's stride, dilation and pads (1, 1 and 0 on
 * the others) and the original auto_pad (under SAME_* an axis of kernel, stride and
 * dilation 1 gets no padding, so each axis is padded as in the original).
 */
export function axisPlacement(n: NodeProto, spatial: number): AttributeProto[][] {
  const out: AttributeProto[][] = Array.from({ length: spatial }, () => []);
  for (const name of ['strides', 'dilations'] as const) {
    const v = attrInts(n, name);
    if (!v) continue;
    out.forEach((attrs, a) => attrs.push(intsAttr(name, v.map((x, i) => (i === a ? x : 1)))));
  }
  const pads = attrInts(n, 'pads');
  if (pads) out.forEach((attrs, a) => attrs.push(intsAttr('pads', pads.map((x, i) => (i % spatial === a ? x : 0)))));
  const autoPad = attrString(n, 'auto_pad');
  if (autoPad !== undefined) out.forEach((attrs) => attrs.push(stringAttr('auto_pad', autoPad)));
  return out;
}

/** Axis a's kernel shape in a chain of one conv per axis: k_a on axis a, 1 on the others. */
export const axisKernel = (kernel: readonly number[], a: number): number[] => kernel.map((k, i) => (i === a ? k : 1));

/** Letters naming each spatial axis's factor in initializer names (2-D: y, x, as before 1-D/3-D). */
export const axisLetters = (n: number): string[] => (n === 1 ? ['k'] : n === 2 ? ['y', 'x'] : n === 3 ? ['z', 'y', 'x'] : Array.from({ length: n }, (_, i) => `k${i + 1}`));

/**
 * As conv-split's chainMismatch for any number of spatial axes: why a chain's factors do
 * not fit a [T, S/g, k…] weight, or undefined; `want` gives each factor's dims from the
 * weight's dims and the factors' leading dims.
 */
export function chainMismatchNd(
  chain: readonly unknown[], factors: readonly ChainFactor[], weightDims: readonly number[],
  want: (w: number[], lead: number[]) => number[][],
): string | undefined {
  const dims = want([...weightDims], factors.map((x) => x.dims[0]!));
  if (chain.length !== dims.length || factors.length !== dims.length) return `expected a chain of ${dims.length} convs, found ${chain.length}`;
  const fits = (x: readonly number[], w: readonly number[]): boolean => x.length === w.length && x.every((v, i) => v === w[i]);
  if (!factors.every((x, i) => fits(x.dims, dims[i]!))) {
    const shown = factors.map((x) => `[${x.dims.join(', ')}]`);
    return `chain factors ${shown.length === 2 ? shown.join(' and ') : shown.join(', ')} do not fit weight [${weightDims.join(', ')}]`;
  }
  return undefined;
}

export interface GroupedSplitMatch extends SplitConvMatch {
  /** Input and output channels per group. */
  s: number;
  t: number;
  /** Anchored patch moments per group, when the statistics carry them (`anchor` is group 0's). */
  anchors?: AnchoredPatch[];
}

/** conv-split's matchSplitConv with the per-group sizes and anchored statistics. */
export function matchGroupedSplit(layer: LayerInfo, cx: PassContext, declines: Declines, what: string): GroupedSplitMatch | Skip {
  const m = matchSplitConv(layer, cx, declines, what);
  if (isSkip(m)) return m;
  const { geo } = m;
  return { ...m, s: geo.S / geo.group, t: geo.T / geo.group, anchors: anchoredPatches(cx, layer.name, geo) };
}

/** A split whose factors each own one input mode (TT, 4-way CP): what its per-mode whitening reads. */
export interface ModeWhitenedMatch extends GroupedSplitMatch {
  /** Input-channel Gram blocks (per group) and the rows behind them: whiten mode S alone when the patch statistics are too few. */
  channelGram?: Float64Array[];
  channelSamples: number;
  /** Per group, the per-mode whitening [L_S, L_1, …] (an undefined L: that mode is not whitened; undefined: none); made on first use. */
  whitening?: ((Matrix | undefined)[] | undefined)[];
}

/** matchGroupedSplit with the channel statistics modeWhitening falls back on. */
export function matchModeWhitened(layer: LayerInfo, cx: PassContext, declines: Declines, what: string): ModeWhitenedMatch | Skip {
  const m = matchGroupedSplit(layer, cx, declines, what);
  if (isSkip(m)) return m;
  return { ...m, channelGram: channelBlocks(cx, layer.name, m.geo), channelSamples: cx.stats?.get(layer.name)?.count ?? 0 };
}

/**
 * Group j's per-mode whitening (conv-stats.ts perModeWhitening) from what is well determined,
 * as conv-cp's Kronecker whitening: every mode from the patch Gram (the partly compressed
 * model's when anchored) with at least MIN_ROWS_PER_DIM rows per patch dimension; else the
 * channel mode alone from the channel Gram with as many per channel; else none (a whitened
 * fit on fewer rows overfits them). Made for every group on first use, kept on the match.
 */
export function modeWhitening(m: ModeWhitenedMatch, j: number): (Matrix | undefined)[] | undefined {
  if (!m.whitening) {
    const dims = [m.s, ...m.geo.kernel];
    const usePatch = !!m.patches && m.samples >= MIN_ROWS_PER_DIM * m.s * m.geo.kernelSize;
    const useChannel = !usePatch && !!m.channelGram && m.channelSamples >= MIN_ROWS_PER_DIM * m.s;
    m.whitening = Array.from({ length: m.geo.group }, (_, g) => {
      if (usePatch) return perModeWhitening(dims, m.anchors?.[g]?.gramHat ?? m.patches!.gram[g]!);
      return useChannel ? perModeWhitening(dims, undefined, m.channelGram![g]!) : undefined;
    });
  }
  return m.whitening[j];
}

/**
 * A split pass's `compose` on a chain of g groups: every factor stacks its groups along
 * its output channels, so each is cut into g equal slices, group j's kernel composed from
 * its slices by `one`, and the groups' kernels laid one after another (the original's
 * grouped layout [T, S/g, k…]).
 */
export function composeGroups(factors: readonly Float32Array[], groups: number, one: (slices: Float32Array[]) => Float32Array): Float32Array {
  if (groups === 1) return one([...factors]);
  const kernels = Array.from({ length: groups }, (_, j) => one(factors.map((f) => {
    const per = f.length / groups;
    return f.subarray(j * per, (j + 1) * per);
  })));
  const out = new Float32Array(kernels.reduce((a, k) => a + k.length, 0));
  kernels.forEach((k, j) => out.set(k, j * k.length));
  return out;
}

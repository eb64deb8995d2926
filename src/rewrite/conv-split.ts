/**
 * What the passes that split a 2-D conv's window by axis (conv-spatial-svd, conv-tt,
 * conv-cp4) share: screening by attributes and shapes, the match's reading of the weight
 * and statistics, and the shape check of a chain before --stages composes it back.
 */
import type { LayerInfo } from '../graph/layers.js';
import { convLayerGeometry, finiteWeight, isDepthwise, readConvGeometry, type ConvGeometry } from './conv-geometry.js';
import { anchoredPatches, patchBlocks, type AnchoredPatch, type PatchBlocks } from './conv-stats.js';
import { isSkip, skip, type ChainFactor, type MatchBase, type PassContext, type Skip } from './pass.js';

/** Why a conv is not for a pass, from attributes and shapes only (no weight read). */
export type Declines = (geo: ConvGeometry) => Skip | undefined;

/**
 * The screen of a split pass: 2-D, kh, kw > 1, not depthwise, group 1. `otherAxes` and
 * `oneAxis` say what becomes of 1-D/3-D convs and of 1xk/kx1 kernels; with `pointwise` a
 * 1x1 kernel has a reason of its own.
 */
export function splitDeclines(otherAxes: string, oneAxis: string, pointwise: boolean): Declines {
  return (geo) => {
    if (geo.spatial !== 2) return skip(`applies to 2-D convs only (this one has ${geo.spatial} spatial ${geo.spatial === 1 ? 'axis' : 'axes'}: ${otherAxes})`);
    const [kh, kw] = geo.kernel as [number, number];
    if (pointwise && kh === 1 && kw === 1) return skip('does not apply to 1x1 convs (a matrix: conv1x1-svd handles it)');
    if (kh === 1 || kw === 1) return skip(`applies to kernels with kh, kw > 1 only (${kh}x${kw}: ${oneAxis})`);
    if (isDepthwise(geo)) return skip(`does not apply to depthwise convs (one input channel per group, group ${geo.group}: nothing to gain)`);
    if (geo.group !== 1) return skip(`does not apply to grouped convs (group ${geo.group}; conv-tucker2 handles them)`);
    return undefined;
  };
}

/** LayerPass.accepts of a pass that screens with `declines`. */
export function acceptsUnless(declines: Declines): (layer: LayerInfo) => true | Skip {
  return (layer) => {
    const geo = readConvGeometry(layer.node, layer.weightShape);
    if (isSkip(geo)) return geo;
    return declines(geo) ?? true;
  };
}

/** The part of the match every split pass reads: the geometry, the finite weight and the group-1 patch statistics. */
export interface SplitConvMatch extends MatchBase {
  geo: ConvGeometry;
  w: Float32Array;
  kh: number;
  kw: number;
  patches?: PatchBlocks;
  /** Patches (or, without a patch count, input positions) behind the statistics. */
  samples: number;
  /** Anchored patch moments (group 1), when the statistics carry them. */
  anchor?: AnchoredPatch;
}

/** The common match, or why not: a declined conv's reason is prefixed by `what` (e.g. 'spatial SVD'). */
export function matchSplitConv(layer: LayerInfo, cx: PassContext, declines: Declines, what: string): SplitConvMatch | Skip {
  const c = convLayerGeometry(layer);
  if (isSkip(c)) return c;
  const { geo, dataType } = c;
  const no = declines(geo);
  if (no) return skip(`${what} ${no.skip}`);
  const w = finiteWeight(layer, cx);
  if (isSkip(w)) return w;
  const st = cx.stats?.get(layer.name);
  return {
    layer, node: layer.node, graph: layer.graph, dataType, geo, w, kh: geo.kernel[0]!, kw: geo.kernel[1]!,
    patches: patchBlocks(cx, layer.name, geo), samples: st?.patchCount ?? st?.count ?? 0, anchor: anchoredPatches(cx, layer.name, geo)?.[0],
  };
}

/**
 * Why a chain's factors do not fit a [T, S, kh, kw] weight, or undefined when they do:
 * `want` gives each factor's dims (one per conv of the chain) from the weight's dims and
 * the factors' leading dims (their ranks).
 */
export function chainMismatch(
  chain: readonly unknown[], factors: readonly ChainFactor[], weightDims: readonly number[],
  want: (w: [number, number, number, number], lead: number[]) => number[][],
): string | undefined {
  const dims = want(weightDims as [number, number, number, number], factors.map((x) => x.dims[0]!));
  if (chain.length !== dims.length || factors.length !== dims.length) return `expected a chain of ${dims.length} convs, found ${chain.length}`;
  const fits = (x: readonly number[], w: readonly number[]): boolean => x.length === w.length && x.every((v, i) => v === w[i]);
  if (weightDims.length !== 4 || !factors.every((x, i) => fits(x.dims, dims[i]!))) {
    const shown = factors.map((x) => `[${x.dims.join(', ')}]`);
    return `chain factors ${shown.length === 2 ? shown.join(' and ') : shown.join(', ')} do not fit weight [${weightDims.join(', ')}]`;
  }
  return undefined;
}

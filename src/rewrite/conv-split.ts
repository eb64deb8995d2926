/**
 * What the passes that split a conv's window by axis (conv-spatial-svd, conv-tt, conv-cp4)
 * share: screening by attributes and shapes (the screen itself is conv-split-groups.ts's
 * groupedSplitDeclines), the match's reading of the weight and statistics, and the shape
 * check of a 2-D chain before --stages composes it back.
 */
import type { LayerInfo } from '../graph/layers.js';
import { convLayerGeometry, finiteWeight, readConvGeometry, type ConvGeometry } from './conv-geometry.js';
import { anchoredPatches, patchBlocks, type AnchoredPatch, type PatchBlocks } from './conv-stats.js';
import { isSkip, skip, type ChainFactor, type MatchBase, type PassContext, type Skip } from './pass.js';

/** Why a conv is not for a pass, from attributes and shapes only (no weight read). */
export type Declines = (geo: ConvGeometry) => Skip | undefined;

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

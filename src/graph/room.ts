/**
 * Where a model's compute is, by layer kind, and how much low-rank rewrites could give at
 * most. Dense k×k convs, 1x1 convs and Gemm/MatMul layers are what the rewrites shrink;
 * depthwise and grouped convs and everything that is not a layer (activations,
 * normalisation, pooling, reshapes) they cannot touch. The bound is Amdahl's: the speed-up
 * if the rewritable layers took no time at all, so a model whose time sits elsewhere
 * (MobileNet-style) shows at once that there is little to gain.
 */
import { attrInt } from './attrs.js';
import type { LayerInfo } from './layers.js';

export type LayerKind = 'dense kxk conv' | '1x1 conv' | 'depthwise/grouped conv' | 'Gemm/MatMul' | 'other layers';

export const KINDS: readonly LayerKind[] = ['dense kxk conv', '1x1 conv', 'depthwise/grouped conv', 'Gemm/MatMul', 'other layers'];

/** Kinds the rewrites can shrink. */
export const REWRITABLE: ReadonlySet<LayerKind> = new Set(['dense kxk conv', '1x1 conv', 'Gemm/MatMul']);

export function layerKind(l: LayerInfo): LayerKind {
  if (l.op === 'Gemm' || l.op === 'MatMul') return 'Gemm/MatMul';
  if (l.op !== 'Conv' && l.op !== 'ConvTranspose') return 'other layers';
  const group = attrInt(l.node, 'group', 1);
  if (group > 1) return 'depthwise/grouped conv';
  return l.weightShape.slice(2).every((k) => k === 1) ? '1x1 conv' : 'dense kxk conv';
}

export interface KindShare {
  kind: LayerKind;
  layers: number;
  macs: number;
  /** Kernel time (µs) of these layers' nodes, when the model was profiled. */
  us?: number;
}

export interface Room {
  kinds: KindShare[];
  /** Sum of every layer's MACs (layers of unknown MACs count 0). */
  macs: number;
  /** Kernel time of the whole model (µs), including the nodes that are not layers. */
  totalUs?: number;
  /** Share of the rewritable layers: of the time when profiled, else of the layers' MACs. */
  rewritableShare: number;
  /** 1 / (1 − rewritableShare): the speed-up if the rewritable layers cost nothing. */
  bound: number;
  basis: 'time' | 'macs';
}

/** `nodeTimes` (µs by node name, from a profiled run) turns MAC shares into time shares. */
export function roomOf(layers: readonly LayerInfo[], nodeTimes?: { byNode: ReadonlyMap<string, number>; total: number }): Room {
  const kinds = new Map<LayerKind, KindShare>(KINDS.map((k) => [k, { kind: k, layers: 0, macs: 0, ...(nodeTimes && { us: 0 }) }]));
  let macs = 0;
  let rewritableMacs = 0;
  let rewritableUs = 0;
  for (const l of layers) {
    const kind = layerKind(l);
    const s = kinds.get(kind)!;
    s.layers++;
    s.macs += l.macs ?? 0;
    macs += l.macs ?? 0;
    const us = nodeTimes && l.node.name ? nodeTimes.byNode.get(l.node.name) ?? 0 : 0;
    if (s.us !== undefined) s.us += us;
    if (REWRITABLE.has(kind)) { rewritableMacs += l.macs ?? 0; rewritableUs += us; }
  }
  const timed = nodeTimes !== undefined && nodeTimes.total > 0;
  const share = timed ? rewritableUs / nodeTimes.total : macs > 0 ? rewritableMacs / macs : 0;
  return {
    kinds: [...kinds.values()].filter((k) => k.layers > 0), macs,
    ...(timed && { totalUs: nodeTimes.total }),
    rewritableShare: share, bound: share < 1 ? 1 / (1 - share) : Infinity, basis: timed ? 'time' : 'macs',
  };
}

/**
 * Shared helpers of the ConvTranspose passes (convtranspose-tucker2, convtranspose-svd):
 * the geometry of a ConvTranspose node, its weight in the Conv layout the conv numerics
 * expect, the attributes its chain carries, and costs per *input* position.
 *
 * Layout: a ConvTranspose weight is W [S, T/g, k…] (input channels first); group j maps
 * input channels j·S/g… to output channels j·T/g…. The Conv layout of the same linear map
 * per kernel tap is Wc [T, S/g, k…] with Wc[j·t + a, b, k] = W[j·s + b, a, k] (s = S/g,
 * t = T/g): the channel roles swap per group, the taps stay where they are.
 * Cost model: MACs per input position, as layerMacs (src/graph/layers.ts) counts a
 * ConvTranspose (each input element scatters into (T/g)·∏k outputs). A stage that runs
 * at the output resolution (a 1x1 conv after the core) costs ∏strides times its
 * per-position count (borders, pads and output_padding ignored).
 */
import { attrInt, attrInts } from '../graph/attrs.js';
import type { LayerInfo } from '../graph/layers.js';
import type { AttributeProto } from '../onnx/schema.js';
import { newNode, type NodeProto } from '../onnx/schema.js';
import { readConvGeometry, type ConvGeometry } from './conv-geometry.js';
import { FLOAT_TYPES } from './emit.js';
import { isSkip, skip, type Cost, type Skip } from './pass.js';

/**
 * Attributes that place the window of a ConvTranspose: they belong on the one ConvTranspose
 * of a chain, verbatim (output_shape and output_padding only make sense with its strides).
 */
export const TRANSPOSE_PLACEMENT_ATTRS: readonly string[] = ['strides', 'pads', 'dilations', 'auto_pad', 'output_padding', 'output_shape'];

/**
 * A ConvTranspose's geometry in ConvGeometry's terms (T output channels, S input channels,
 * kernel, strides, pads, dilations, auto_pad), plus its own output attributes.
 */
export interface ConvTransposeGeometry extends ConvGeometry {
  /** output_padding per axis (zeros when absent). */
  outputPadding: number[];
  /** output_shape as written (absent when the node has none). */
  outputShape?: number[];
}

/** Reads and validates a ConvTranspose whose weight [S, T/g, k…] has shape `weightShape`. */
export function readConvTransposeGeometry(node: NodeProto, weightShape: readonly number[]): ConvTransposeGeometry | Skip {
  if (weightShape.length < 3) return skip(`ConvTranspose weight has rank ${weightShape.length}, expected ≥ 3`);
  if (weightShape.some((d) => !Number.isInteger(d) || d <= 0)) return skip(`ConvTranspose weight has an empty or invalid dim [${weightShape.join(', ')}]`);
  const [S, tPerGroup] = weightShape as [number, number];
  const group = attrInt(node, 'group', 1);
  if (!Number.isInteger(group) || group < 1) return skip(`group ${group} is not a positive integer`);
  if (S % group !== 0) return skip(`input channels ${S} are not divisible by group ${group}`);
  // The same map in the Conv layout [T, S/g, k…]: the Conv reader checks everything but the output attributes.
  const geo = readConvGeometry(node, [tPerGroup * group, S / group, ...weightShape.slice(2)]);
  if (isSkip(geo)) return geo;
  const outputPadding = attrInts(node, 'output_padding') ?? new Array<number>(geo.spatial).fill(0);
  if (outputPadding.length !== geo.spatial || outputPadding.some((p) => p < 0)) return skip(`output_padding [${outputPadding.join(', ')}] does not fit ${geo.spatial} spatial axes`);
  const outputShape = attrInts(node, 'output_shape');
  if (outputShape && outputShape.some((d) => d < 1)) return skip(`output_shape [${outputShape.join(', ')}] has a non-positive dim`);
  return { ...geo, outputPadding, ...(outputShape ? { outputShape } : {}) };
}

/** The checks every ConvTranspose pass starts with: a ConvTranspose with a float weight and a valid geometry. */
export function convTransposeLayerGeometry(layer: LayerInfo): { geo: ConvTransposeGeometry; dataType: number } | Skip {
  const n = layer.node;
  if (n.opType !== 'ConvTranspose') return skip(`${n.opType} is not a ConvTranspose`);
  const dataType = layer.weight.tensor.dataType ?? 0;
  if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
  const geo = readConvTransposeGeometry(n, layer.weightShape);
  return isSkip(geo) ? geo : { geo, dataType };
}

/**
 * True when the ConvTranspose is a plain per-position product: a 1x1 kernel, stride 1, no
 * pads, output_padding or output_shape (auto_pad then adds no padding either), group 1.
 * Its SVD pair can then be two 1x1 Convs.
 */
export function isPlainPointwise(geo: ConvTransposeGeometry): boolean {
  return geo.group === 1 && geo.kernel.every((k) => k === 1) && geo.strides.every((s) => s === 1)
    && geo.pads.every((p) => p === 0) && geo.outputPadding.every((p) => p === 0) && geo.outputShape === undefined;
}

/** The original node's placement attributes (strides, pads, dilations, auto_pad, output_padding, output_shape), copied. */
export function transposePlacementAttrs(node: NodeProto): AttributeProto[] {
  return node.attribute.filter((a) => TRANSPOSE_PLACEMENT_ATTRS.includes(a.name ?? '')).map((a) => ({ ...a, ints: [...a.ints] }));
}

/** A ConvTranspose node. Bias is appended when given. */
export function convTransposeNode(name: string, x: string, w: string, out: string, attrs: AttributeProto[], bias?: string, doc?: string): NodeProto {
  const n = newNode({ opType: 'ConvTranspose', name, input: bias ? [x, w, bias] : [x, w], output: [out], attribute: attrs });
  if (doc) n.docString = doc;
  return n;
}

/**
 * Swaps the channel roles of a grouped kernel: from [A, B/g, K] (A channels on the first
 * axis, B/g per group on the second) to [B, A/g, K], taps unchanged. It maps a ConvTranspose
 * weight [S, T/g, K] to the Conv layout [T, S/g, K] (A = S, B = T), and a Conv-layout
 * [T, S/g, K] back to [S, T/g, K] (A = T, B = S).
 */
export function swapChannelRoles(data: ArrayLike<number>, A: number, bPerGroup: number, K: number, group: number): Float32Array {
  const aPerGroup = A / group;
  const out = new Float32Array(A * bPerGroup * K);
  for (let j = 0; j < group; j++) {
    for (let a = 0; a < aPerGroup; a++) {
      for (let b = 0; b < bPerGroup; b++) {
        const src = ((j * aPerGroup + a) * bPerGroup + b) * K;
        const dst = ((j * bPerGroup + b) * aPerGroup + a) * K;
        for (let k = 0; k < K; k++) out[dst + k] = data[src + k]!;
      }
    }
  }
  return out;
}

/** The original ConvTranspose: S·(T/g)·∏k parameters and MACs per input position (bias ignored on both sides). */
export function convTransposeCost(geo: ConvGeometry): Cost {
  const p = geo.S * (geo.T / geo.group) * geo.kernelSize;
  return { params: p, macsPerPosition: p };
}

/**
 * Tucker-2 chain with per-group ranks r1 (input side) and r2 (output side), per input
 * position: 1x1 [g·r1, S/g] at the input resolution → ConvTranspose core [g·r1, r2, k…]
 * (each of its g·r1 input channels scatters r2·∏k outputs) → 1x1 [T, r2] at the output
 * resolution (∏strides output positions per input position).
 */
export function transposeTucker2Cost(geo: ConvGeometry, r1: number, r2: number): Cost {
  const g = geo.group;
  const first = g * r1 * (geo.S / g);
  const core = g * r1 * r2 * geo.kernelSize;
  const last = geo.T * r2;
  return { params: first + core + last, macsPerPosition: first + core + last * geo.strideFactor };
}

/**
 * SVD pair of the mode-S unfolding [S, T·∏k] (group 1): 1x1 [r, S] at the input resolution
 * → ConvTranspose [r, T, k…] with the original window: r·S + r·T·∏k per input position.
 * (With a plain 1x1 the second is a 1x1 Conv [T, r]: the same count.)
 */
export function transposeSvdCost(geo: ConvGeometry, r: number): Cost {
  const p = r * geo.S + r * geo.T * geo.kernelSize;
  return { params: p, macsPerPosition: p };
}

/**
 * Shared helpers of the Conv passes (conv1x1-svd, conv-tucker2, conv-cp): the geometry of a
 * Conv node (spatial rank, strides, pads, dilations, auto_pad, group), the attributes of
 * the convs of a chain, the kernel unfoldings, and costs per output position.
 *
 * Layout: W [T, S/g, k…] (ONNX OIHW generalised to any number of spatial axes).
 * Cost model: MACs per *output* position. A stage that runs at the input resolution
 * (a stride-1 1x1 before a strided core) costs ∏strides times its per-position count,
 * because a strided conv has ∏strides input positions per output position (pads and
 * borders ignored).
 */
import { attrInt, attrInts, attrString, intAttr, intsAttr } from '../graph/attrs.js';
import { singularValuesByGram } from '../linalg/svd.js';
import { newNode, type AttributeProto, type NodeProto } from '../onnx/schema.js';
import type { LayerInfo } from '../graph/layers.js';
import { readTensorFloat } from '../onnx/tensor.js';
import { FLOAT_TYPES } from './emit.js';
import { isSkip, skip, type Cost, type PassContext, type Skip } from './pass.js';

export type AutoPad = 'NOTSET' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';
const AUTO_PADS: readonly string[] = ['NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'];

/** Attributes that place the window: they belong on the one spatial (or strided) conv of a chain. */
export const PLACEMENT_ATTRS: readonly string[] = ['strides', 'pads', 'dilations', 'auto_pad'];

export interface ConvGeometry {
  /** Number of spatial axes (1, 2, 3, …). */
  spatial: number;
  /** Output channels. */
  T: number;
  /** Input channels (weight dim 1 × group). */
  S: number;
  group: number;
  /** Kernel extent per spatial axis (from the weight). */
  kernel: number[];
  /** ∏ kernel. */
  kernelSize: number;
  strides: number[];
  dilations: number[];
  /** Explicit pads [begin…, end…] (zeros when absent). */
  pads: number[];
  autoPad: AutoPad;
  /** ∏ strides: input positions per output position. */
  strideFactor: number;
  /** True when the Conv has a bias (input 2). */
  hasBias: boolean;
  /** True when the node carries a kernel_shape attribute. */
  hasKernelShape: boolean;
}

const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

/** Reads and validates the geometry of a Conv whose weight has shape `weightShape`. */
export function readConvGeometry(node: NodeProto, weightShape: readonly number[]): ConvGeometry | Skip {
  if (weightShape.length < 3) return skip(`Conv weight has rank ${weightShape.length}, expected ≥ 3`);
  if (weightShape.some((d) => !Number.isInteger(d) || d <= 0)) return skip(`Conv weight has an empty or invalid dim [${weightShape.join(', ')}]`);
  const spatial = weightShape.length - 2;
  const kernel = weightShape.slice(2);
  const group = attrInt(node, 'group', 1);
  const T = weightShape[0];
  if (!Number.isInteger(group) || group < 1) return skip(`group ${group} is not a positive integer`);
  if (T % group !== 0) return skip(`output channels ${T} are not divisible by group ${group}`);
  const S = weightShape[1] * group;
  const ks = attrInts(node, 'kernel_shape');
  if (ks && (ks.length !== spatial || ks.some((k, i) => k !== kernel[i]))) {
    return skip(`kernel_shape [${ks.join(', ')}] does not match the weight's [${kernel.join(', ')}]`);
  }
  const strides = attrInts(node, 'strides') ?? new Array<number>(spatial).fill(1);
  const dilations = attrInts(node, 'dilations') ?? new Array<number>(spatial).fill(1);
  const pads = attrInts(node, 'pads') ?? new Array<number>(2 * spatial).fill(0);
  if (strides.length !== spatial || strides.some((s) => s < 1)) return skip(`strides [${strides.join(', ')}] do not fit ${spatial} spatial axes`);
  if (dilations.length !== spatial || dilations.some((s) => s < 1)) return skip(`dilations [${dilations.join(', ')}] do not fit ${spatial} spatial axes`);
  if (pads.length !== 2 * spatial || pads.some((p) => p < 0)) return skip(`pads [${pads.join(', ')}] do not fit ${spatial} spatial axes`);
  const autoPad = attrString(node, 'auto_pad') ?? 'NOTSET';
  if (!AUTO_PADS.includes(autoPad)) return skip(`auto_pad ${autoPad} is not supported`);
  const hasBias = node.input.length > 2 && node.input[2] !== '';
  return {
    spatial, T, S, group, kernel, kernelSize: prod(kernel), strides, dilations, pads,
    autoPad: autoPad as AutoPad, strideFactor: prod(strides), hasBias, hasKernelShape: ks !== undefined,
  };
}

/** True when every kernel extent is 1. */
export const isPointwise = (geo: ConvGeometry): boolean => geo.kernel.every((k) => k === 1);

/** Depthwise: one input channel per group (S/g = 1) — a per-channel filter, nothing to factor. */
export const isDepthwise = (geo: ConvGeometry): boolean => geo.S / geo.group === 1;

/** The original node's strides/pads/dilations/auto_pad attributes, copied. */
export function placementAttrs(node: NodeProto): AttributeProto[] {
  return node.attribute.filter((a) => PLACEMENT_ATTRS.includes(a.name ?? '')).map((a) => ({ ...a, ints: [...a.ints] }));
}

/**
 * Attributes of one conv of a chain: `kernel` sets kernel_shape, `group` is written when > 1,
 * and `placement` (the original strides/pads/dilations/auto_pad) is carried when given.
 */
export function chainConvAttrs(kernel: readonly number[], group: number, placement: AttributeProto[] = []): AttributeProto[] {
  const attrs = [...placement, intsAttr('kernel_shape', kernel)];
  if (group > 1) attrs.push(intAttr('group', group));
  return attrs;
}

/** A Conv node. Bias is appended when given. */
export function convNode(name: string, x: string, w: string, out: string, attrs: AttributeProto[], bias?: string, doc?: string): NodeProto {
  const n = newNode({ opType: 'Conv', name, input: bias ? [x, w, bias] : [x, w], output: [out], attribute: attrs });
  if (doc) n.docString = doc;
  return n;
}

/** A stage of a conv chain: its parameters, MACs per position at the resolution it runs at, and that resolution. */
export interface Stage { params: number; macs: number; atInput: boolean }

/** Sums a chain's cost, scaling stages that run at the input resolution by ∏strides. */
export function chainCost(geo: ConvGeometry, stages: readonly Stage[]): Cost {
  let params = 0;
  let macs = 0;
  for (const s of stages) {
    params += s.params;
    macs += s.atInput ? s.macs * geo.strideFactor : s.macs;
  }
  return { params, macsPerPosition: macs };
}

/** The original conv: T·(S/g)·∏k parameters and MACs per output position (bias ignored on both sides). */
export function convCost(geo: ConvGeometry): Cost {
  const p = geo.T * (geo.S / geo.group) * geo.kernelSize;
  return { params: p, macsPerPosition: p };
}

/**
 * Tucker-2 chain with per-group ranks r1 (input side) and r2 (output side):
 * 1x1 [g·r1, S/g] at the input resolution → core [g·r2, r1, k…] → 1x1 [T, r2].
 */
export function tucker2Cost(geo: ConvGeometry, r1: number, r2: number): Cost {
  const g = geo.group;
  const first = g * r1 * (geo.S / g);
  const core = g * r2 * r1 * geo.kernelSize;
  const last = geo.T * r2;
  return chainCost(geo, [
    { params: first, macs: first, atInput: true },
    { params: core, macs: core, atInput: false },
    { params: last, macs: last, atInput: false },
  ]);
}

/** CP chain: 1x1 [R, S] at the input resolution → depthwise [R, 1, k…] → 1x1 [T, R]. */
export function cpCost(geo: ConvGeometry, r: number): Cost {
  return chainCost(geo, [
    { params: r * geo.S, macs: r * geo.S, atInput: true },
    { params: r * geo.kernelSize, macs: r * geo.kernelSize, atInput: false },
    { params: geo.T * r, macs: geo.T * r, atInput: false },
  ]);
}

/**
 * SVD pair of a 1x1 conv: the first conv carries the stride, so both run at the output
 * resolution: r·S + T·r.
 */
export function pointwiseSvdCost(geo: ConvGeometry, r: number): Cost {
  return chainCost(geo, [
    { params: r * geo.S, macs: r * geo.S, atInput: false },
    { params: geo.T * r, macs: geo.T * r, atInput: false },
  ]);
}

// ---- kernel layout --------------------------------------------------------------------

/** One group's kernel: W_g [T/g, S/g, K] (K = ∏k), row-major Float64. */
export interface GroupKernel { t: number; s: number; k: number; data: Float64Array }

/** Splits W [T, S/g, k…] into its g group kernels (group j owns output channels j·T/g…). */
export function groupKernels(w: ArrayLike<number>, geo: ConvGeometry): GroupKernel[] {
  const t = geo.T / geo.group;
  const s = geo.S / geo.group;
  const k = geo.kernelSize;
  const per = t * s * k;
  const out: GroupKernel[] = [];
  for (let j = 0; j < geo.group; j++) {
    const data = new Float64Array(per);
    for (let i = 0; i < per; i++) data[i] = w[j * per + i];
    out.push({ t, s, k, data });
  }
  return out;
}

/** Mode-T unfolding [T/g, (S/g)·K]: the kernel as stored. */
export function unfoldT(gk: GroupKernel): { rows: number; cols: number; data: Float64Array } {
  return { rows: gk.t, cols: gk.s * gk.k, data: gk.data };
}

/** Mode-S unfolding [S/g, (T/g)·K]: element (s, t·K + k) = W[t, s, k]. */
export function unfoldS(gk: GroupKernel): { rows: number; cols: number; data: Float64Array } {
  const { t, s, k } = gk;
  const data = new Float64Array(t * s * k);
  for (let a = 0; a < t; a++) {
    for (let b = 0; b < s; b++) {
      const src = (a * s + b) * k;
      const dst = b * t * k + a * k;
      for (let c = 0; c < k; c++) data[dst + c] = gk.data[src + c];
    }
  }
  return { rows: s, cols: t * k, data };
}

/** Singular values (descending; from the Gram matrix: rank choices read only their energies) and ‖·‖²_F of an unfolding. */
export function unfoldingSpectrum(m: { rows: number; cols: number; data: Float64Array }): { sigma: Float64Array; total: number } {
  let total = 0;
  for (let i = 0; i < m.data.length; i++) total += m.data[i] * m.data[i];
  return { sigma: singularValuesByGram(m), total };
}

/** True when every weight value is finite (the decompositions refuse NaN/Inf). */
export function allFinite(w: ArrayLike<number>): boolean {
  for (let i = 0; i < w.length; i++) if (!Number.isFinite(w[i])) return false;
  return true;
}

/** The checks every conv pass starts with: a Conv with a float weight and a valid geometry. */
export function convLayerGeometry(layer: LayerInfo): { geo: ConvGeometry; dataType: number } | Skip {
  const n = layer.node;
  if (n.opType !== 'Conv') return skip(`${n.opType} is not a Conv`);
  const dataType = layer.weight.tensor.dataType ?? 0;
  if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
  const geo = readConvGeometry(n, layer.weightShape);
  return isSkip(geo) ? geo : { geo, dataType };
}

/** The weight as fp32, or a Skip when it holds NaN or infinite values. */
export function finiteWeight(layer: LayerInfo, cx: PassContext): Float32Array | Skip {
  const w = readTensorFloat(layer.weight.tensor, cx.external);
  return allFinite(w) ? w : skip('weight has NaN or infinite values');
}

/**
 * Vector-Jacobian products of ONNX operators, as ONNX nodes: given the gradient g of a
 * node's outputs, the gradient of the inputs that depend on the differentiated values
 * (never of weights). Shapes are the concrete ones of the run the backward graph serves.
 *
 *   Conv x∗W        → ConvTranspose(g, W) with the same placement (output_padding restores
 *                     the input size the strided forward dropped)
 *   ConvTranspose   → Conv(g, W)
 *   MatMul a·b      → g·bᵀ, aᵀ·g (summed over broadcast batch axes)
 *   Resize          → Aₕᵀ·g·A_w (resize-matrix.ts), MaxPool → scatter into its argmax
 *   AveragePool     → depthwise ConvTranspose of a uniform kernel
 *   elementwise     → g times the local derivative, summed over broadcast axes
 *
 * A rule returns a string when it cannot give an exact product (a form it does not know):
 * the values upstream of that node then get no gradient (adjoint.ts says which).
 */
import { DataType, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { readTensorFloat, readTensorInts } from '../onnx/tensor.js';
import type { AdjointEmitter } from './adjoint-emit.js';
import { attrFloat, attrInt, attrInts, attrString, intAttr, intsAttr, floatAttr } from './attrs.js';
import { isIdentityMatrix, resizeMatrix, type NearestRounding, type ResizeCoordinates } from './resize-matrix.js';

export interface RuleContext {
  e: AdjointEmitter;
  node: NodeProto;
  /** Gradient of each output (undefined where none reaches it). */
  gOut: readonly (string | undefined)[];
  /** Whether each input's gradient is wanted. */
  want: readonly boolean[];
  /** Concrete dims of a value (activations from the run, weights from their tensors). */
  dims(v: string): readonly number[] | undefined;
  /** The constant tensor behind a value (initializer or Constant node), if any. */
  constant(v: string): TensorProto | undefined;
}

export type Rule = (cx: RuleContext) => (string | undefined)[] | string;

const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

function dimsOf(cx: RuleContext, v: string | undefined): readonly number[] {
  const d = v ? cx.dims(v) : undefined;
  if (!d) throw new Error(`no shape for ${v ?? '(missing)'}`);
  return d;
}

/** g summed down to the shape `to` it was broadcast from (numpy rules), then reshaped to it. */
function unbroadcast(cx: RuleContext, g: string, from: readonly number[], to: readonly number[]): string {
  const lead = from.length - to.length;
  const axes: number[] = [];
  for (let i = 0; i < from.length; i++) if (i < lead || (to[i - lead] === 1 && from[i] !== 1)) axes.push(i);
  if (axes.length === 0 && lead === 0) return g;
  const r = axes.length > 0 ? cx.e.reduce('ReduceSum', g, axes, true) : g;
  return cx.e.reshape(r, to);
}

/** Elementwise: g·f' where f' is a local derivative already broadcast to the output. */
function unary(derivative: (cx: RuleContext, x: string, y: string) => string): Rule {
  return (cx) => {
    const g = cx.gOut[0]!;
    return [cx.e.mul(g, derivative(cx, cx.node.input[0]!, cx.node.output[0]!))];
  };
}

const greater = (cx: RuleContext, a: string, b: string): string => cx.e.one('Greater', [a, b]);
const less = (cx: RuleContext, a: string, b: string): string => cx.e.one('Less', [a, b]);
const mask = (cx: RuleContext, b: string): string => cx.e.toFloat(b);
/** 1 where 0 < v < 1 (the sloped part of a hard sigmoid), else 0. */
const inside01 = (cx: RuleContext, v: string): string =>
  mask(cx, cx.e.one('And', [greater(cx, v, cx.e.f32([0])), less(cx, v, cx.e.f32([1]))]));

const identity: Rule = (cx) => [cx.gOut[0]];

const reshapeBack: Rule = (cx) => [cx.e.reshape(cx.gOut[0]!, dimsOf(cx, cx.node.input[0]))];

function binary(cx: RuleContext, ga: () => string, gb: () => string): (string | undefined)[] {
  const y = dimsOf(cx, cx.node.output[0]);
  return [
    cx.want[0] ? unbroadcast(cx, ga(), y, dimsOf(cx, cx.node.input[0])) : undefined,
    cx.want[1] ? unbroadcast(cx, gb(), y, dimsOf(cx, cx.node.input[1])) : undefined,
  ];
}

/** Ints of an attribute (older opsets) or of a constant input (newer), or undefined. */
function intsFrom(cx: RuleContext, attr: string, input: number): number[] | undefined {
  const a = attrInts(cx.node, attr);
  if (a) return a;
  const v = cx.node.input[input];
  if (!v) return undefined;
  const t = cx.constant(v);
  return t ? readTensorInts(t) : undefined;
}

const norm = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

/** Explicit [begin…, end…] pads of a Conv-like node at concrete sizes, or a reason. */
export function convPads(node: NodeProto, x: readonly number[], y: readonly number[], k: readonly number[], s: readonly number[], d: readonly number[]): number[] | string {
  const n = k.length;
  const auto = attrString(node, 'auto_pad') ?? 'NOTSET';
  if (auto === 'NOTSET') return attrInts(node, 'pads') ?? new Array<number>(2 * n).fill(0);
  if (auto === 'VALID') return new Array<number>(2 * n).fill(0);
  const begin: number[] = [];
  const end: number[] = [];
  for (let i = 0; i < n; i++) {
    const total = Math.max(0, (y[i]! - 1) * s[i]! + (k[i]! - 1) * d[i]! + 1 - x[i]!);
    const b = auto === 'SAME_UPPER' ? Math.floor(total / 2) : Math.ceil(total / 2);
    begin.push(b);
    end.push(total - b);
  }
  return [...begin, ...end];
}

/** A ConvTranspose's pads over `n` spatial axes, or why its output size is not theirs to set. */
export function convTransposePads(node: NodeProto, n: number): number[] | string {
  if ((attrString(node, 'auto_pad') ?? 'NOTSET') !== 'NOTSET' || attrInts(node, 'output_shape')) return 'its output size is set by auto_pad or output_shape';
  return attrInts(node, 'pads') ?? new Array<number>(2 * n).fill(0);
}

/** Input and output dims, spatial rank, kernel, strides and dilations of a Conv or ConvTranspose. */
function convPlacement(cx: RuleContext) {
  const x = dimsOf(cx, cx.node.input[0]);
  const y = dimsOf(cx, cx.node.output[0]);
  const w = dimsOf(cx, cx.node.input[1]);
  const n = w.length - 2;
  const k = w.slice(2);
  const s = attrInts(cx.node, 'strides') ?? new Array<number>(n).fill(1);
  const d = attrInts(cx.node, 'dilations') ?? new Array<number>(n).fill(1);
  return { x, y, n, k, s, d };
}

const conv: Rule = (cx) => {
  if (cx.want[1] || cx.want[2]) return 'its weight depends on the differentiated values';
  const { x, y, n, k, s, d } = convPlacement(cx);
  const pads = convPads(cx.node, x.slice(2), y.slice(2), k, s, d);
  if (typeof pads === 'string') return pads;
  const outPad: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = x[2 + i]! - ((y[2 + i]! - 1) * s[i]! + (k[i]! - 1) * d[i]! + 1 - pads[i]! - pads[n + i]!);
    if (p < 0 || p >= Math.max(s[i]!, d[i]!)) return `no ConvTranspose restores its input size on axis ${2 + i}`;
    outPad.push(p);
  }
  return [cx.e.one('ConvTranspose', [cx.gOut[0]!, cx.node.input[1]!], [
    intsAttr('kernel_shape', k), intsAttr('strides', s), intsAttr('dilations', d), intsAttr('pads', pads),
    intsAttr('output_padding', outPad), intAttr('group', attrInt(cx.node, 'group', 1)),
  ])];
};

const convTranspose: Rule = (cx) => {
  if (cx.want[1] || cx.want[2]) return 'its weight depends on the differentiated values';
  const { x, y, n, k, s, d } = convPlacement(cx);
  const pads = convTransposePads(cx.node, n);
  if (typeof pads === 'string') return pads;
  for (let i = 0; i < n; i++) {
    const back = Math.floor((y[2 + i]! + pads[i]! + pads[n + i]! - ((k[i]! - 1) * d[i]! + 1)) / s[i]!) + 1;
    if (back !== x[2 + i]) return `no Conv restores its input size on axis ${2 + i}`;
  }
  return [cx.e.one('Conv', [cx.gOut[0]!, cx.node.input[1]!], [
    intsAttr('kernel_shape', k), intsAttr('strides', s), intsAttr('dilations', d), intsAttr('pads', pads), intAttr('group', attrInt(cx.node, 'group', 1)),
  ])];
};

/** Swaps the last two axes. */
function swapLast(cx: RuleContext, v: string, rank: number): string {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return cx.e.one('Transpose', [v], [intsAttr('perm', perm)]);
}

const matMul: Rule = (cx) => {
  const [a, b] = cx.node.input as [string, string];
  const da = dimsOf(cx, a);
  const db = dimsOf(cx, b);
  const y = dimsOf(cx, cx.node.output[0]);
  if (da.length < 2 || db.length < 2) return 'a 1-D MatMul operand';
  const g = cx.gOut[0]!;
  const ga = cx.want[0] ? unbroadcast(cx, cx.e.one('MatMul', [g, swapLast(cx, b, db.length)]), [...y.slice(0, -1), da.at(-1)!], da) : undefined;
  const gb = cx.want[1] ? unbroadcast(cx, cx.e.one('MatMul', [swapLast(cx, a, da.length), g]), [...y.slice(0, -2), db.at(-2)!, y.at(-1)!], db) : undefined;
  return [ga, gb];
};

const gemm: Rule = (cx) => {
  if (cx.want[1]) return 'its B depends on the differentiated values';
  const g = cx.gOut[0]!;
  const alpha = attrFloat(cx.node, 'alpha', 1);
  const beta = attrFloat(cx.node, 'beta', 1);
  const transA = attrInt(cx.node, 'transA', 0) === 1;
  const transB = attrInt(cx.node, 'transB', 0) === 1;
  let ga: string | undefined;
  if (cx.want[0]) {
    // d(op(A)) = α·g·op(B)ᵀ; op(B)ᵀ is B itself when transB, else Bᵀ.
    const inputs = [g, cx.node.input[1]!];
    const attrs = [floatAttr('alpha', alpha), intAttr('transB', transB ? 0 : 1)];
    if (cx.e.opset < 11) { inputs.push(cx.e.f32([0])); attrs.push(floatAttr('beta', 0)); }
    const gOp = cx.e.one('Gemm', inputs, attrs);
    ga = transA ? cx.e.one('Transpose', [gOp], [intsAttr('perm', [1, 0])]) : gOp;
  }
  const c = cx.node.input[2];
  const gc = cx.want[2] && c ? unbroadcast(cx, cx.e.mul(g, cx.e.f32([beta])), dimsOf(cx, cx.node.output[0]), dimsOf(cx, c)) : undefined;
  return [ga, undefined, gc];
};

const batchNorm: Rule = (cx) => {
  if (cx.want.slice(1).some((w) => w)) return 'its parameters depend on the differentiated values';
  if (attrInt(cx.node, 'training_mode', 0) === 1 || cx.node.output.filter((o) => o).length > 1) return 'training-mode BatchNormalization';
  const x = dimsOf(cx, cx.node.input[0]);
  const [, scale, , , variance] = cx.node.input as string[];
  const eps = cx.e.f32([attrFloat(cx.node, 'epsilon', 1e-5)]);
  const factor = cx.e.one('Div', [scale!, cx.e.one('Sqrt', [cx.e.one('Add', [variance!, eps])])]);
  const shaped = cx.e.reshape(factor, [x[1]!, ...new Array<number>(Math.max(0, x.length - 2)).fill(1)]);
  return [cx.e.mul(cx.gOut[0]!, shaped)];
};

/**
 * Normalisation over `axes` (x̂ = (x − μ)/σ, σ = √(var + ε), y = γ·x̂ + β), recomputed from x:
 * dx = (ĝ − mean ĝ − x̂·mean(ĝ·x̂))/σ with ĝ = γ·g, the means over `axes`.
 */
function normalized(cx: RuleContext, x: string, g: string, axes: readonly number[], eps: number, gamma: string): string {
  const e = cx.e;
  const centred = e.one('Sub', [x, e.reduce('ReduceMean', x, axes, true)]);
  const sigma = e.one('Sqrt', [e.one('Add', [e.reduce('ReduceMean', e.mul(centred, centred), axes, true), e.f32([eps])])]);
  const xh = e.one('Div', [centred, sigma]);
  const gh = e.mul(g, gamma);
  const inner = e.one('Sub', [e.one('Sub', [gh, e.reduce('ReduceMean', gh, axes, true)]), e.mul(xh, e.reduce('ReduceMean', e.mul(gh, xh), axes, true))]);
  return e.one('Div', [inner, sigma]);
}

const layerNorm: Rule = (cx) => {
  if (cx.want.slice(1).some((w) => w)) return 'its scale or bias depends on the differentiated values';
  if (cx.node.output.slice(1).some((o) => o)) return 'its mean or inverse deviation is read';
  const rank = dimsOf(cx, cx.node.input[0]).length;
  const axis = norm(attrInt(cx.node, 'axis', -1), rank);
  const axes = Array.from({ length: rank - axis }, (_, i) => axis + i);
  return [normalized(cx, cx.node.input[0]!, cx.gOut[0]!, axes, attrFloat(cx.node, 'epsilon', 1e-5), cx.node.input[1]!)];
};

const instanceNorm: Rule = (cx) => {
  if (cx.want.slice(1).some((w) => w)) return 'its scale or bias depends on the differentiated values';
  const x = dimsOf(cx, cx.node.input[0]);
  const axes = Array.from({ length: x.length - 2 }, (_, i) => 2 + i);
  const gamma = cx.e.reshape(cx.node.input[1]!, [x[1]!, ...new Array<number>(x.length - 2).fill(1)]);
  return [normalized(cx, cx.node.input[0]!, cx.gOut[0]!, axes, attrFloat(cx.node, 'epsilon', 1e-5), gamma)];
};

const softmax: Rule = (cx) => {
  const y = cx.node.output[0]!;
  const rank = dimsOf(cx, y).length;
  const axis = norm(attrInt(cx.node, 'axis', cx.e.opset < 13 ? 1 : -1), rank);
  // Before opset 13 Softmax normalises over every axis from `axis` on (the input coerced to 2-D).
  const axes = cx.e.opset < 13 ? Array.from({ length: rank - axis }, (_, i) => axis + i) : [axis];
  const g = cx.gOut[0]!;
  const dot = cx.e.reduce('ReduceSum', cx.e.mul(g, y), axes, true);
  return [cx.e.mul(y, cx.e.one('Sub', [g, dot]))];
};

function reduceRule(mean: boolean): Rule {
  return (cx) => {
    const x = dimsOf(cx, cx.node.input[0]);
    const attrFirst = mean ? cx.e.opset < 18 : cx.e.opset < 13;
    const axesRaw = attrFirst ? attrInts(cx.node, 'axes') : intsFrom(cx, 'axes', 1);
    if (!attrFirst && cx.node.input[1] && !axesRaw) return 'its axes are not constant';
    if (!axesRaw && attrInt(cx.node, 'noop_with_empty_axes', 0) === 1) return cx.want[0] ? [cx.gOut[0]] : [];
    const axes = (axesRaw ?? x.map((_, i) => i)).map((a) => norm(a, x.length));
    const kept = x.map((d, i) => (axes.includes(i) ? 1 : d));
    let g = cx.e.reshape(cx.gOut[0]!, kept);
    if (mean) g = cx.e.mul(g, cx.e.f32([1 / prod(axes.map((a) => x[a]!))]));
    return [cx.e.one('Expand', [g, cx.e.i64(x)])];
  };
}

const globalAveragePool: Rule = (cx) => {
  const x = dimsOf(cx, cx.node.input[0]);
  const g = cx.e.mul(cx.gOut[0]!, cx.e.f32([1 / prod(x.slice(2))]));
  return [cx.e.one('Expand', [g, cx.e.i64(x)])];
};

const averagePool: Rule = (cx) => {
  const x = dimsOf(cx, cx.node.input[0]);
  const y = dimsOf(cx, cx.node.output[0]);
  const k = attrInts(cx.node, 'kernel_shape')!;
  const n = k.length;
  const s = attrInts(cx.node, 'strides') ?? new Array<number>(n).fill(1);
  const pads = attrInts(cx.node, 'pads') ?? new Array<number>(2 * n).fill(0);
  if ((attrString(cx.node, 'auto_pad') ?? 'NOTSET') !== 'NOTSET') return 'auto_pad';
  if ((attrInts(cx.node, 'dilations') ?? []).some((d) => d !== 1)) return 'dilated pooling';
  if (pads.some((p) => p > 0) && attrInt(cx.node, 'count_include_pad', 0) === 0) return 'padded windows that do not count their pads';
  const outPad: number[] = [];
  for (let i = 0; i < n; i++) {
    const floorOut = Math.floor((x[2 + i]! + pads[i]! + pads[n + i]! - k[i]!) / s[i]!) + 1;
    if (floorOut !== y[2 + i]) return 'ceil_mode windows past the input';
    const p = x[2 + i]! - ((y[2 + i]! - 1) * s[i]! + k[i]! - pads[i]! - pads[n + i]!);
    if (p < 0 || p >= s[i]!) return `no ConvTranspose restores its input size on axis ${2 + i}`;
    outPad.push(p);
  }
  const c = x[1]!;
  const w = cx.e.f32(new Float32Array(c * prod(k)).fill(1 / prod(k)), [c, 1, ...k]);
  return [cx.e.one('ConvTranspose', [cx.gOut[0]!, w], [
    intsAttr('kernel_shape', k), intsAttr('strides', s), intsAttr('pads', pads), intsAttr('output_padding', outPad), intAttr('group', c),
  ])];
};

const maxPool: Rule = (cx) => {
  const k = attrInts(cx.node, 'kernel_shape')!;
  const n = k.length;
  const s = attrInts(cx.node, 'strides') ?? new Array<number>(n).fill(1);
  if ((attrString(cx.node, 'auto_pad') ?? 'NOTSET') !== 'NOTSET') return 'auto_pad';
  if ((attrInts(cx.node, 'dilations') ?? []).some((d) => d !== 1)) return 'dilated pooling';
  if (attrInt(cx.node, 'storage_order', 0) !== 0) return 'column-major indices';
  // Overlapping windows could route two gradients to one input; a scatter keeps only one.
  if (k.some((kk, i) => kk > s[i]!)) return 'overlapping windows';
  const x = cx.node.input[0]!;
  const [, indices] = cx.e.op('MaxPool', [x], cx.node.attribute, 2);
  const flat = [1, -1];
  const zeros = cx.e.reshape(cx.e.mul(x, cx.e.f32([0])), flat);
  const scattered = cx.e.scatter(zeros, cx.e.reshape(indices!, flat), cx.e.reshape(cx.gOut[0]!, flat), 1);
  return [cx.e.reshape(scattered, dimsOf(cx, x))];
};

const RESIZE_COORDS = new Set(['half_pixel', 'pytorch_half_pixel', 'asymmetric', 'align_corners']);
const ROUNDINGS = new Set(['round_prefer_floor', 'round_prefer_ceil', 'floor', 'ceil']);

const resize: Rule = (cx) => {
  const upsample = cx.node.opType === 'Upsample';
  if (!upsample && cx.e.opset < 11) return 'Resize before opset 11';
  const mode = attrString(cx.node, 'mode') ?? 'nearest';
  if (mode !== 'nearest' && (mode !== 'linear' || upsample)) return `mode ${mode}`;
  const coordinates = upsample ? 'asymmetric' : attrString(cx.node, 'coordinate_transformation_mode') ?? 'half_pixel';
  const rounding = upsample ? 'floor' : attrString(cx.node, 'nearest_mode') ?? 'round_prefer_floor';
  if (!RESIZE_COORDS.has(coordinates)) return `coordinate_transformation_mode ${coordinates}`;
  if (!ROUNDINGS.has(rounding)) return `nearest_mode ${rounding}`;
  if (attrInt(cx.node, 'antialias', 0) !== 0 || attrInts(cx.node, 'axes') || (attrString(cx.node, 'keep_aspect_ratio_policy') ?? 'stretch') !== 'stretch') return 'antialias, axes or an aspect-ratio policy';
  const x = dimsOf(cx, cx.node.input[0]);
  const y = dimsOf(cx, cx.node.output[0]);
  const r = x.length;
  if (r < 2 || y.length !== r || x.slice(0, r - 2).some((d, i) => d !== y[i])) return 'it resizes more than the last two axes';
  let scales: Float32Array | undefined;
  const scalesAttr = getFloats(cx.node, 'scales');
  if (scalesAttr) scales = scalesAttr;
  else {
    const sv = cx.node.input[upsample ? 1 : 2];
    const t = sv ? cx.constant(sv) : undefined;
    if (t && t.dataType === DataType.FLOAT) scales = readTensorFloat(t);
    if (scales && scales.length === 0) scales = undefined;
  }
  const axisMatrix = (i: number): Float32Array => resizeMatrix({
    in: x[i]!, out: y[i]!, scale: scales?.[i] ?? y[i]! / x[i]!, mode: mode as 'nearest' | 'linear',
    coordinates: coordinates as ResizeCoordinates, nearest: rounding as NearestRounding,
  });
  const ah = axisMatrix(r - 2);
  const aw = axisMatrix(r - 1);
  let g = cx.gOut[0]!;
  // g·A_w then Aₕᵀ·(…): the adjoint of Aₕ·X·A_wᵀ.
  if (!isIdentityMatrix(aw, x[r - 1]!)) g = cx.e.one('MatMul', [g, cx.e.f32(aw, [y[r - 1]!, x[r - 1]!])]);
  if (!isIdentityMatrix(ah, x[r - 2]!)) {
    const t = new Float32Array(ah.length);
    for (let o = 0; o < y[r - 2]!; o++) for (let i = 0; i < x[r - 2]!; i++) t[i * y[r - 2]! + o] = ah[o * x[r - 2]! + i]!;
    g = cx.e.one('MatMul', [cx.e.f32(t, [x[r - 2]!, y[r - 2]!]), g]);
  }
  return [g];
};

function getFloats(node: NodeProto, name: string): Float32Array | undefined {
  const a = node.attribute.find((t) => t.name === name);
  return a && a.floats.length > 0 ? Float32Array.from(a.floats) : undefined;
}

const concat: Rule = (cx) => {
  const rank = dimsOf(cx, cx.node.output[0]).length;
  const axis = norm(attrInt(cx.node, 'axis', 0), rank);
  const out: (string | undefined)[] = [];
  let offset = 0;
  for (let i = 0; i < cx.node.input.length; i++) {
    const size = dimsOf(cx, cx.node.input[i])[axis]!;
    out.push(cx.want[i] ? cx.e.slice(cx.gOut[0]!, [offset], [offset + size], [axis]) : undefined);
    offset += size;
  }
  return out;
};

const split: Rule = (cx) => {
  const x = dimsOf(cx, cx.node.input[0]);
  const axis = norm(attrInt(cx.node, 'axis', 0), x.length);
  // Outputs no gradient reaches contribute zeros of their shape.
  const parts = cx.node.output.map((o, i) => cx.gOut[i] ?? cx.e.mul(o, cx.e.f32([0])));
  return [cx.e.one('Concat', parts, [intAttr('axis', axis)])];
};

const slice: Rule = (cx) => {
  const x = dimsOf(cx, cx.node.input[0]);
  const starts = intsFrom(cx, 'starts', 1);
  const ends = intsFrom(cx, 'ends', 2);
  if (!starts || !ends) return 'its starts or ends are not constant';
  const axes = (intsFrom(cx, 'axes', 3) ?? starts.map((_, i) => i)).map((a) => norm(a, x.length));
  const steps = cx.e.opset >= 10 ? intsFrom(cx, 'steps', 4) : undefined;
  if (steps?.some((s) => s !== 1)) return 'steps other than 1';
  const pads = new Array<number>(2 * x.length).fill(0);
  axes.forEach((a, i) => {
    const d = x[a]!;
    const clamp = (v: number): number => Math.min(d, Math.max(0, v < 0 ? v + d : v));
    const b = clamp(starts[i]!);
    const e = Math.max(b, clamp(ends[i]!));
    pads[a] = b;
    pads[x.length + a] = d - e;
  });
  return [cx.e.pad(cx.gOut[0]!, pads)];
};

const pad: Rule = (cx) => {
  if ((attrString(cx.node, 'mode') ?? 'constant') !== 'constant') return 'a reflecting or edge Pad';
  const pads = intsFrom(cx, 'pads', 1);
  if (!pads || pads.some((p) => p < 0)) return 'its pads are not constant and non-negative';
  if (cx.node.input[3]) return 'a Pad over chosen axes';
  const x = dimsOf(cx, cx.node.input[0]);
  const n = x.length;
  return [cx.e.slice(cx.gOut[0]!, pads.slice(0, n), x.map((d, i) => pads[i]! + d), x.map((_, i) => i)), undefined];
};

const transpose: Rule = (cx) => {
  const rank = dimsOf(cx, cx.node.input[0]).length;
  const perm = attrInts(cx.node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
  const inverse = new Array<number>(rank);
  perm.forEach((p, i) => { inverse[p] = i; });
  return [cx.e.one('Transpose', [cx.gOut[0]!], [intsAttr('perm', inverse)])];
};

const expand: Rule = (cx) => [unbroadcast(cx, cx.gOut[0]!, dimsOf(cx, cx.node.output[0]), dimsOf(cx, cx.node.input[0])), undefined];

const where: Rule = (cx) => {
  if (cx.want[0]) return 'its condition depends on the differentiated values';
  const [c, a, b] = cx.node.input as [string, string, string];
  const g = cx.gOut[0]!;
  const y = dimsOf(cx, cx.node.output[0]);
  const zero = cx.e.f32([0]);
  return [
    undefined,
    cx.want[1] ? unbroadcast(cx, cx.e.one('Where', [c, g, zero]), y, dimsOf(cx, a)) : undefined,
    cx.want[2] ? unbroadcast(cx, cx.e.one('Where', [c, zero, g]), y, dimsOf(cx, b)) : undefined,
  ];
};

const pow: Rule = (cx) => {
  if (cx.want[1]) return 'its exponent depends on the differentiated values';
  const [x, p] = cx.node.input as [string, string];
  const d = cx.e.mul(p, cx.e.one('Pow', [x, cx.e.one('Sub', [p, cx.e.f32([1])])]));
  return [unbroadcast(cx, cx.e.mul(cx.gOut[0]!, d), dimsOf(cx, cx.node.output[0]), dimsOf(cx, x)), undefined];
};

const cast: Rule = (cx) => (attrInt(cx.node, 'to', 0) === DataType.FLOAT ? [cx.gOut[0]] : 'a Cast to another type');

const sum: Rule = (cx) => {
  const y = dimsOf(cx, cx.node.output[0]);
  return cx.node.input.map((v, i) => (cx.want[i] ? unbroadcast(cx, cx.gOut[0]!, y, dimsOf(cx, v)) : undefined));
};

/** The rules by op type (default domain). */
export const ADJOINT_RULES: Readonly<Record<string, Rule>> = {
  Identity: identity,
  Dropout: identity,
  Cast: cast,
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  Transpose: transpose,
  Concat: concat,
  Split: split,
  Slice: slice,
  Pad: pad,
  Expand: expand,
  Relu: unary((cx, x) => mask(cx, greater(cx, x, cx.e.f32([0])))),
  LeakyRelu: unary((cx, x) => {
    const a = attrFloat(cx.node, 'alpha', 0.01);
    return cx.e.one('Add', [cx.e.f32([a]), cx.e.mul(mask(cx, greater(cx, x, cx.e.f32([0]))), cx.e.f32([1 - a]))]);
  }),
  // 1 where the value passed unclipped (x = y), whatever form the bounds take.
  Clip: (cx) => [cx.e.mul(cx.gOut[0]!, mask(cx, cx.e.one('Not', [cx.e.one('Or', [less(cx, cx.node.input[0]!, cx.node.output[0]!), greater(cx, cx.node.input[0]!, cx.node.output[0]!)])]))), undefined, undefined],
  Sigmoid: unary((cx, _x, y) => cx.e.mul(y, cx.e.one('Sub', [cx.e.f32([1]), y]))),
  Tanh: unary((cx, _x, y) => cx.e.one('Sub', [cx.e.f32([1]), cx.e.mul(y, y)])),
  HardSigmoid: unary((cx, _x, y) => cx.e.mul(inside01(cx, y), cx.e.f32([attrFloat(cx.node, 'alpha', 0.2)]))),
  HardSwish: unary((cx, x) => {
    // y = x·h(x), h = clamp(x/6 + 1/2, 0, 1): y' = h + x/6 where h is sloped.
    const h = cx.e.one('HardSigmoid', [x], [floatAttr('alpha', 1 / 6), floatAttr('beta', 0.5)]);
    return cx.e.one('Add', [h, cx.e.mul(cx.e.mul(x, cx.e.f32([1 / 6])), inside01(cx, h))]);
  }),
  Sqrt: unary((cx, _x, y) => cx.e.one('Div', [cx.e.f32([0.5]), y])),
  Exp: unary((_cx, _x, y) => y),
  Reciprocal: unary((cx, _x, y) => cx.e.one('Neg', [cx.e.mul(y, y)])),
  Neg: (cx) => [cx.e.one('Neg', [cx.gOut[0]!])],
  Erf: unary((cx, x) => cx.e.mul(cx.e.f32([2 / Math.sqrt(Math.PI)]), cx.e.one('Exp', [cx.e.one('Neg', [cx.e.mul(x, x)])]))),
  Add: (cx) => binary(cx, () => cx.gOut[0]!, () => cx.gOut[0]!),
  Sub: (cx) => binary(cx, () => cx.gOut[0]!, () => cx.e.one('Neg', [cx.gOut[0]!])),
  Mul: (cx) => binary(cx, () => cx.e.mul(cx.gOut[0]!, cx.node.input[1]!), () => cx.e.mul(cx.gOut[0]!, cx.node.input[0]!)),
  Div: (cx) => binary(
    cx,
    () => cx.e.one('Div', [cx.gOut[0]!, cx.node.input[1]!]),
    () => cx.e.one('Neg', [cx.e.one('Div', [cx.e.mul(cx.gOut[0]!, cx.node.output[0]!), cx.node.input[1]!])]),
  ),
  Sum: sum,
  Pow: pow,
  Where: where,
  MatMul: matMul,
  Gemm: gemm,
  Conv: conv,
  ConvTranspose: convTranspose,
  BatchNormalization: batchNorm,
  LayerNormalization: layerNorm,
  InstanceNormalization: instanceNorm,
  Softmax: softmax,
  ReduceMean: reduceRule(true),
  ReduceSum: reduceRule(false),
  GlobalAveragePool: globalAveragePool,
  AveragePool: averagePool,
  MaxPool: maxPool,
  Resize: resize,
  Upsample: resize,
};

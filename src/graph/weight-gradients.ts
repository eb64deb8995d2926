/**
 * Gradients of a layer's weight and bias, as ONNX nodes, from its input x and the gradient
 * g of its output (adjoint.ts gives g): what a fit of the weights to the whole model's
 * output needs (optimize/refine.ts), without copying activations out of ORT.
 *
 *   Conv y = x∗W (G groups, stride s, dilation d, pads p):
 *     ∂W[o,i,k] = Σ_{n,q} g[n,o,q]·x_pad[n,i,q·s + k·d]
 *     = a Conv whose batch is x's in-group channel, whose channels are (group, sample) and
 *       whose kernel is g: stride d, dilation s, the same leading pads; its output is the
 *       kernel's extent or more (the strided forward may leave rows unread), sliced to it.
 *     ∂b = Σ over every axis but the channel of g.
 *   ConvTranspose y = x∗ᵀW, the adjoint of the Conv u ↦ u∗W of the same placement
 *   (⟨x∗ᵀW, g⟩ = ⟨x, g∗W⟩, adjoint-rules.ts): ∂W is that Conv's weight gradient with g as
 *     its input and x as its output's gradient; ∂b as for a Conv.
 *   MatMul y = x·W (W 2-D): ∂W = x₂ᵀ·g₂, both flattened to rows.
 *   Gemm y = α·op(A)·op(B) + β·C: ∂op(B) = α·op(A)ᵀ·g (transposed back when transB);
 *     ∂C = β·Σ_rows g for a C of one row.
 */
import type { NodeProto } from '../onnx/schema.js';
import type { AdjointEmitter } from './adjoint-emit.js';
import { convPads, convTransposePads } from './adjoint-rules.js';
import { attrFloat, attrInt, attrInts, floatAttr, intAttr, intsAttr } from './attrs.js';

export interface WeightGradient {
  /** Value holding ∂L/∂W, the weight's own shape. */
  weight: string;
  /** Value holding ∂L/∂b, when the node has a bias it can take. */
  bias?: string;
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * ∂W (and ∂b) of `node` from the gradient `g` of its output, or why not. `dims` gives the
 * concrete dims of the node's input, output and weight.
 */
export function emitWeightGradient(e: AdjointEmitter, node: NodeProto, g: string, dims: (v: string) => readonly number[] | undefined): WeightGradient | string {
  const [x, w, b] = node.input;
  const xd = x ? dims(x) : undefined;
  const yd = node.output[0] ? dims(node.output[0]) : undefined;
  const wd = w ? dims(w) : undefined;
  if (!x || !w || !xd || !yd || !wd) return 'no shapes for its input, output or weight';
  switch (node.opType) {
    case 'Conv': {
      const pads = convPads(node, xd.slice(2), yd.slice(2), wd.slice(2), strides(node, wd), dilations(node, wd));
      if (typeof pads === 'string') return pads;
      return convWeight(e, node, { input: x, inDims: xd, grad: g, outDims: yd }, wd, pads, b && biasGradient(e, g, wd));
    }
    case 'ConvTranspose': {
      const pads = convTransposePads(node, wd.length - 2);
      if (typeof pads === 'string') return pads;
      return convWeight(e, node, { input: g, inDims: yd, grad: x, outDims: xd }, wd, pads, b && biasGradient(e, g, wd));
    }
    case 'MatMul': {
      if (wd.length !== 2 || xd.length < 2) return 'a MatMul whose weight is not its second, 2-D operand';
      const x2 = e.reshape(x, [-1, wd[0]!]);
      const g2 = e.reshape(g, [-1, wd[1]!]);
      return { weight: e.one('MatMul', [e.one('Transpose', [x2], [intsAttr('perm', [1, 0])]), g2]) };
    }
    case 'Gemm': return gemmWeight(e, node, g, yd, b ? dims(b) : undefined);
    default: return `no weight gradient for ${node.opType}`;
  }
}

const strides = (node: NodeProto, wd: readonly number[]): number[] => attrInts(node, 'strides') ?? new Array<number>(wd.length - 2).fill(1);
const dilations = (node: NodeProto, wd: readonly number[]): number[] => attrInts(node, 'dilations') ?? new Array<number>(wd.length - 2).fill(1);
/** ∂b of a Conv or ConvTranspose: its output's gradient summed over every axis but the channel. */
const biasGradient = (e: AdjointEmitter, g: string, wd: readonly number[]): string => e.reduce('ReduceSum', g, [0, ...range(wd.length - 2).map((i) => i + 2)], false);

/**
 * ∂W of the Conv reading `input` (dims `inDims`) whose output's gradient is `grad` (dims
 * `outDims`), with `node`'s strides, dilations and group and the given pads.
 */
function convWeight(
  e: AdjointEmitter, node: NodeProto, { input, inDims: xd, grad: g, outDims: yd }: { input: string; inDims: readonly number[]; grad: string; outDims: readonly number[] },
  wd: readonly number[], pads: readonly number[], bias: string | undefined,
): WeightGradient {
  const n = wd.length - 2;
  const k = wd.slice(2);
  const s = strides(node, wd);
  const d = dilations(node, wd);
  const groups = attrInt(node, 'group', 1);
  const [batch, cin] = [xd[0]!, xd[1]!];
  const cout = yd[1]!;
  const ci = cin / groups;
  const co = cout / groups;
  const sp = xd.slice(2);
  const spOut = yd.slice(2);
  const spatial = range(n).map((i) => i + 3);
  // x → [ci, G·N, …]: batch = the in-group channel, channels = (group, sample).
  const xs = e.reshape(e.one('Transpose', [e.reshape(input, [batch, groups, ci, ...sp])], [intsAttr('perm', [2, 1, 0, ...spatial])]), [ci, groups * batch, ...sp]);
  // g → [G·co, N, …]: one kernel per output channel, its channels the samples.
  const gs = e.reshape(e.one('Transpose', [e.reshape(g, [batch, groups, co, ...spOut])], [intsAttr('perm', [1, 2, 0, ...spatial])]), [cout, batch, ...spOut]);
  const full = e.one('Conv', [xs, gs], [
    intsAttr('kernel_shape', spOut), intsAttr('strides', d), intsAttr('dilations', s), intsAttr('pads', pads), intAttr('group', groups),
  ]);
  // Its extent along axis i: ⌊(x + p_b + p_e − s·(y − 1) − 1)/d⌋ + 1 ≥ k.
  const extent = range(n).map((i) => Math.floor((sp[i]! + pads[i]! + pads[n + i]! - s[i]! * (spOut[i]! - 1) - 1) / d[i]!) + 1);
  const cut = extent.some((v, i) => v !== k[i]) ? e.slice(full, new Array<number>(n).fill(0), k, range(n).map((i) => i + 2)) : full;
  const weight = e.one('Transpose', [cut], [intsAttr('perm', [1, 0, ...range(n).map((i) => i + 2)])]);
  return { weight, ...(bias && { bias }) };
}

function gemmWeight(e: AdjointEmitter, node: NodeProto, g: string, yd: readonly number[], cd: readonly number[] | undefined): WeightGradient {
  const [a, , c] = node.input;
  const alpha = attrFloat(node, 'alpha', 1);
  const beta = attrFloat(node, 'beta', 1);
  const transA = attrInt(node, 'transA', 0);
  const transB = attrInt(node, 'transB', 0) === 1;
  const gemm = (p: string, q: string, attrs: ReturnType<typeof intAttr>[]): string => {
    const inputs = [p, q];
    const all = [floatAttr('alpha', alpha), ...attrs];
    if (e.opset < 11) { inputs.push(e.f32([0])); all.push(floatAttr('beta', 0)); }
    return e.one('Gemm', inputs, all);
  };
  // op(A)ᵀ·g, or its transpose gᵀ·op(A) when B is stored transposed.
  const weight = transB ? gemm(g, a!, [intAttr('transA', 1), intAttr('transB', transA)]) : gemm(a!, g, [intAttr('transA', 1 - transA)]);
  // Only a C of one row ([M] or [1, M]): a column [M, 1] with as many rows sums the other way.
  const rows = cd ? cd.reduce((p, q) => p * q, 1) : 0;
  if (!c || !cd || rows !== yd[1] || cd[cd.length - 1] !== yd[1]) return { weight };
  const summed = e.reduce('ReduceSum', g, [0], false);
  return { weight, bias: e.reshape(beta === 1 ? summed : e.mul(summed, e.f32([beta])), cd) };
}

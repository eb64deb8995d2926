/**
 * Merging a factored layer back into one node, so a later stage can split it again at a
 * lower rank without adding layers (MUSCO-style multi-stage compression).
 *
 * Before: the chain a pass emitted — an SVD pair (MatMul/Gemm or two 1x1 Convs), or a
 *         Tucker-2 / CP chain of three Convs — with its factor initializers
 * After:  the original node, its weight input pointing at one initializer holding the
 *         product of the factors in the original layout; a Conv takes the chain's last
 *         bias (the corrected one when the pass corrected it). The chain's nodes are left
 *         dead for the clean-up.
 */
import { attrFloat, attrInt } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Graph, Model } from '../graph/graph.js';
import type { NodeProto } from '../onnx/schema.js';
import { makeFloatTensor, readTensorFloat, type ExternalBytes } from '../onnx/tensor.js';
import { skip, type Skip } from './pass.js';

/** A layer as it was before its rewrite, and the chain that replaced it. */
export interface FactoredLayer {
  name: string;
  /** A copy of the node before the rewrite. */
  original: NodeProto;
  weightInput: number;
  /** The original weight's dims. */
  weightDims: number[];
  /** The chain's node names, in order. */
  nodes: string[];
}

/** Merges one chain; `merged` maps factor names to merged weights already made (shared MatMul weights). */
export function mergeFactored(model: Model, f: FactoredLayer, external: ExternalBytes | undefined, merged: Map<string, string>): Skip | undefined {
  const found = findChain(model, f.nodes);
  if (!found) return skip(`chain nodes ${f.nodes.join(', ')} not found`);
  const { g, chain } = found;
  const last = chain[chain.length - 1]!;
  const factors = chainFactors(g, chain, f.original.opType === 'Conv' ? undefined : dataInputOf(f));
  if (typeof factors === 'string') return skip(factors);
  const key = factors.map((x) => x.name).join('|');
  let name = merged.get(key);
  if (name === undefined) {
    const data = productOf(f, chain, factors, external);
    if (typeof data === 'string') return skip(data);
    name = model.uniqueName(`${f.name}/merged_w`);
    g.addInitializer(makeFloatTensor(name, f.weightDims, data, factors[0]!.dataType));
    merged.set(key, name);
  }
  const input = [...f.original.input];
  input[f.weightInput] = name;
  if (f.original.opType === 'Conv') {
    const bias = last.input[2];
    if (bias) input[2] = bias; else input.length = Math.min(input.length, 2);
  }
  g.replaceNode(last, [{ ...f.original, input, output: [...last.output] }]);
  return undefined;
}

/** The weight a chain computes, in the original weight's layout (to measure it against the original). */
export function chainWeight(model: Model, f: FactoredLayer, external: ExternalBytes | undefined): Float32Array | Skip {
  const found = findChain(model, f.nodes);
  if (!found) return skip(`chain nodes ${f.nodes.join(', ')} not found`);
  const factors = chainFactors(found.g, found.chain, f.original.opType === 'Conv' ? undefined : dataInputOf(f));
  if (typeof factors === 'string') return skip(factors);
  const data = productOf(f, found.chain, factors, external);
  return typeof data === 'string' ? skip(data) : data;
}

function productOf(f: FactoredLayer, chain: readonly NodeProto[], factors: Factor[], external: ExternalBytes | undefined): Float32Array | string {
  return f.original.opType === 'Conv' ? composeConvChain(chain, factors, f.weightDims, attrInt(f.original, 'group', 1), external) : pairProduct(f, factors, external);
}

interface Factor { name: string; dims: number[]; dataType: number; read: (ext: ExternalBytes | undefined) => Float32Array }

/** The graph holding a chain and its nodes in order, found by name. */
export function findChain(model: Model, names: readonly string[]): { g: Graph; chain: NodeProto[] } | undefined {
  for (const g of model.allGraphs()) {
    const byName = new Map(g.proto.node.map((n) => [n.name ?? '', n]));
    const chain = names.map((n) => byName.get(n));
    if (chain.every((n) => n !== undefined)) return { g, chain: chain as NodeProto[] };
  }
  return undefined;
}

/** The value entering an SVD pair from outside (the original's non-weight product input). */
function dataInputOf(f: FactoredLayer): string {
  return f.original.input[f.weightInput === 1 ? 0 : 1]!;
}

/**
 * Each chain node's constant factor: input 1 of a Conv; for a product, whichever of
 * inputs 0 and 1 is not the data flowing along the chain.
 */
function chainFactors(g: Graph, chain: readonly NodeProto[], dataIn: string | undefined): Factor[] | string {
  const out: Factor[] = [];
  let flow = dataIn;
  for (const n of chain) {
    const idx = n.opType === 'Conv' ? 1 : n.input[0] === flow ? 1 : 0;
    const v = n.input[idx];
    const ref = v ? resolveConstant(g, v) : undefined;
    if (!ref) return `chain node ${n.name}: input ${idx} is not a constant factor`;
    const t = ref.tensor;
    out.push({ name: ref.name, dims: t.dims.map(Number), dataType: t.dataType ?? 1, read: (ext) => readTensorFloat(t, ext) });
    flow = n.output[0];
  }
  return out;
}

/** SVD pair: the product of the two factors, in the original weight's layout and scale. */
function pairProduct(f: FactoredLayer, [p, q]: Factor[], ext: ExternalBytes | undefined): Float32Array | string {
  if (!p || !q || p.dims.length !== 2 || q.dims.length !== 2) return 'an SVD pair needs two 2-D factors';
  // Weight on the right: X·P·Q, so W = P·Q; on the left: Q·(P·X), so W = Q·P.
  const [a, b] = f.weightInput === 1 ? [p, q] : [q, p];
  const [m, r] = a.dims as [number, number];
  const [r2, n] = b.dims as [number, number];
  if (r !== r2) return `factor shapes [${a.dims}] and [${b.dims}] do not chain`;
  const w = matmul(a.read(ext), b.read(ext), m, r, n);
  if (f.original.opType !== 'Gemm') return w;
  // gemm-svd folds alpha into a factor and transposes the stored weight back into op(W).
  const alpha = attrFloat(f.original, 'alpha', 1);
  if (alpha === 0) return 'Gemm with alpha 0';
  const trans = attrInt(f.original, f.weightInput === 1 ? 'transB' : 'transA', 0) !== 0;
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[trans ? j * m + i : i * n + j] = w[i * n + j]! / alpha;
  return out;
}

function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < k; t++) {
      const x = a[i * k + t]!;
      if (x === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += x * b[t * n + j]!;
    }
  }
  return Float32Array.from(out);
}

/**
 * The kernel of a chain of convs where at most one has a spatial window: each grouped
 * weight is expanded to a dense [out, in, K] block, the chain multiplied through, and the
 * result read back in the original's grouped layout [T, S/g, k…].
 */
function composeConvChain(chain: readonly NodeProto[], factors: readonly Factor[], dims: readonly number[], group: number, ext: ExternalBytes | undefined): Float32Array | string {
  let acc: { out: number; inp: number; K: number; data: Float64Array } | undefined;
  for (let i = 0; i < chain.length; i++) {
    const d = dense(factors[i]!, attrInt(chain[i]!, 'group', 1), ext);
    if (!acc) { acc = d; continue; }
    if (d.inp !== acc.out) return `chain convs do not connect (${acc.out} → ${d.inp} channels)`;
    if (d.K > 1 && acc.K > 1) return 'two convs of the chain have spatial windows';
    const K = Math.max(d.K, acc.K);
    const data = new Float64Array(d.out * acc.inp * K);
    for (let o = 0; o < d.out; o++) {
      for (let mid = 0; mid < d.inp; mid++) {
        for (let kp = 0; kp < K; kp++) {
          const x = d.data[(o * d.inp + mid) * d.K + (d.K > 1 ? kp : 0)]!;
          if (x === 0) continue;
          const base = (mid * acc.inp) * acc.K + (acc.K > 1 ? kp : 0);
          for (let s = 0; s < acc.inp; s++) data[(o * acc.inp + s) * K + kp] += x * acc.data[base + s * acc.K]!;
        }
      }
    }
    acc = { out: d.out, inp: acc.inp, K, data };
  }
  if (!acc) return 'empty chain';
  const [T, sPerGroup] = dims as [number, number];
  const K = dims.slice(2).reduce((a, b) => a * b, 1);
  if (acc.out !== T || acc.inp !== sPerGroup * group || (acc.K !== K && acc.K !== 1)) {
    return `chain kernel [${acc.out}, ${acc.inp}, ${acc.K}] does not fit weight [${dims.join(', ')}] with group ${group}`;
  }
  const w = new Float32Array(T * sPerGroup * K);
  const tPerGroup = T / group;
  for (let t = 0; t < T; t++) {
    const g0 = Math.floor(t / tPerGroup) * sPerGroup;
    for (let s = 0; s < sPerGroup; s++) {
      for (let kp = 0; kp < K; kp++) w[(t * sPerGroup + s) * K + kp] = acc.data[(t * acc.inp + g0 + s) * acc.K + (acc.K > 1 ? kp : 0)]!;
    }
  }
  return w;
}

/** A grouped conv weight [O, I/G, k…] as a dense [O, I, K] kernel (zeros outside the groups). */
function dense(f: Factor, group: number, ext: ExternalBytes | undefined): { out: number; inp: number; K: number; data: Float64Array } {
  const [O, iPerGroup] = f.dims as [number, number];
  const K = f.dims.slice(2).reduce((a, b) => a * b, 1);
  const I = iPerGroup * group;
  const oPerGroup = O / group;
  const src = f.read(ext);
  const data = new Float64Array(O * I * K);
  for (let o = 0; o < O; o++) {
    const i0 = Math.floor(o / oPerGroup) * iPerGroup;
    for (let i = 0; i < iPerGroup; i++) for (let kp = 0; kp < K; kp++) data[(o * I + i0 + i) * K + kp] = src[(o * iPerGroup + i) * K + kp]!;
  }
  return { out: O, inp: I, K, data };
}

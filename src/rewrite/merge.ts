/**
 * Merging a factored layer back into one node, so a later stage can split it again at a
 * lower rank without adding layers (MUSCO-style multi-stage compression).
 *
 * Before: the chain a pass emitted — an SVD pair (MatMul/Gemm or two 1x1 Convs), or a
 *         Tucker-2 / CP chain of three Convs — with its factor initializers
 * After:  the original node, its weight input pointing at one initializer holding the
 *         product of the factors in the original layout; a Conv takes the chain's last
 *         bias (the corrected one when the pass corrected it). The chain's nodes are left
 *         dead for the clean-up. Factors stored fp16/bf16 behind Casts (a Cast-fed layer,
 *         cast-weights.ts) give a merged weight stored the same way, behind one Cast.
 * Each pass knows its own inverse (`compose` in passes/): this file finds the chain, reads
 * its constant factors and writes the merged node.
 */
import { intAttr } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Graph, Model } from '../graph/graph.js';
import { castFedConstant } from '../graph/layers.js';
import { newNode, type NodeProto } from '../onnx/schema.js';
import { makeFloatTensor, readTensorFloat, type ExternalBytes } from '../onnx/tensor.js';
import { skip, type ChainFactor, type FactoredLayer, type LayerPass, type Skip } from './pass.js';

export type { FactoredLayer };

/** The part of a pass merging needs: the inverse of its chain. */
export type Composer = Pick<LayerPass<unknown>, 'compose'>;

/** Merges one chain; `merged` maps factor names to merged weights already made (shared MatMul weights). */
export function mergeFactored(model: Model, f: FactoredLayer, pass: Composer, external: ExternalBytes | undefined, merged: Map<string, string>): Skip | undefined {
  const found = findChain(model, f.nodes);
  if (!found) return skip(`chain nodes ${f.nodes.join(', ')} not found`);
  const { g, chain } = found;
  const last = chain[chain.length - 1]!;
  const read = chainFactors(g, chain, dataInputOf(f));
  if (typeof read === 'string') return skip(read);
  const { factors, castTo } = read;
  const key = factors.map((x) => x.name).join('|');
  let name = merged.get(key);
  if (name === undefined) {
    const data = pass.compose(chain, factors, f, external);
    if (typeof data === 'string') return skip(data);
    name = model.uniqueName(`${f.name}/merged_w`);
    g.addInitializer(makeFloatTensor(name, f.weightDims, data, factors[0]!.dataType));
    if (castTo !== undefined) {
      // Factors stored fp16/bf16 behind Casts (cast-weights.ts): the merged weight is stored so too.
      const value = model.uniqueName(`${f.name}/merged_w/cast_out`);
      g.insertBefore(chain[0]!, [newNode({ opType: 'Cast', name: model.uniqueName(`${f.name}/merged_w/cast`), input: [name], output: [value], attribute: [intAttr('to', castTo)] })]);
      name = value;
    }
    merged.set(key, name);
  }
  const input = [...f.original.input];
  input[f.weightInput] = name;
  if (f.original.opType === 'Conv' || f.original.opType === 'ConvTranspose') {
    const bias = last.input[2];
    if (bias) input[2] = bias; else input.length = Math.min(input.length, 2);
  }
  g.replaceNode(last, [{ ...f.original, input, output: [...last.output] }]);
  return undefined;
}

/** The weight a chain computes, in the original weight's layout (to measure it against the original). */
export function chainWeight(model: Model, f: FactoredLayer, pass: Composer, external: ExternalBytes | undefined): Float32Array | Skip {
  const found = findChain(model, f.nodes);
  if (!found) return skip(`chain nodes ${f.nodes.join(', ')} not found`);
  const factors = chainFactors(found.g, found.chain, dataInputOf(f));
  if (typeof factors === 'string') return skip(factors);
  const data = pass.compose(found.chain, factors.factors, f, external);
  return typeof data === 'string' ? skip(data) : data;
}

/** The graph holding a chain and its nodes in order, found by name. */
export function findChain(model: Model, names: readonly string[]): { g: Graph; chain: NodeProto[] } | undefined {
  for (const g of model.allGraphs()) {
    const byName = new Map(g.proto.node.map((n) => [n.name ?? '', n]));
    const chain = names.map((n) => byName.get(n));
    if (chain.every((n) => n !== undefined)) return { g, chain: chain as NodeProto[] };
  }
  return undefined;
}

/** The value entering the chain from outside (the original's non-weight product input; a Conv's data input). */
function dataInputOf(f: FactoredLayer): string {
  return f.original.input[f.weightInput === 1 ? 0 : 1]!;
}

/**
 * Each chain node's constant factor: input 1 of a Conv; for a product, whichever of
 * inputs 0 and 1 is not the data flowing along the chain. A factor stored fp16/bf16 and
 * cast to float (a Cast-fed layer's chain) counts as the stored constant; `castTo` is then
 * the Casts' target, which the merged weight's own Cast keeps.
 */
function chainFactors(g: Graph, chain: readonly NodeProto[], dataIn: string): { factors: ChainFactor[]; castTo?: number } | string {
  const out: ChainFactor[] = [];
  const casts = new Set<number>();
  let flow: string | undefined = dataIn;
  for (const n of chain) {
    const idx = n.opType === 'Conv' ? 1 : n.input[0] === flow ? 1 : 0;
    const v = n.input[idx];
    const direct = v ? resolveConstant(g, v) : undefined;
    const viaCast = !direct && v ? castFedConstant(g, v) : undefined;
    const ref = direct ?? viaCast?.ref;
    if (!ref) return `chain node ${n.name}: input ${idx} is not a constant factor`;
    casts.add(viaCast ? viaCast.cast.to : 0);
    const t = ref.tensor;
    out.push({ name: ref.name, dims: t.dims.map(Number), dataType: t.dataType ?? 1, read: (ext) => readTensorFloat(t, ext) });
    flow = n.output[0];
  }
  if (casts.size > 1) return 'the chain mixes factors behind a Cast and plain ones';
  const castTo = [...casts][0];
  return castTo ? { factors: out, castTo } : { factors: out };
}

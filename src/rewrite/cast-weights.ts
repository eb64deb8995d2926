/**
 * Weights stored in fp16/bf16 and cast to float for their op (the pattern fp16 exporters
 * emit: W16 → Cast(to FLOAT) → MatMul), rewritten the same way they were stored.
 *
 * Before: Y = Op(X, Cast(W16))                      W16 [..] stored fp16 (or bf16)
 * After:  Y = Chain(X, Cast(F1₁₆), Cast(F2₁₆), …)   each new factor Fᵢ stored in W16's type
 * The pass decomposes in fp32 (readTensorFloat widens W16) and, as for any weight, stores
 * its factors in the weight's own type (MatchBase.dataType = the stored type); here each
 * new node that reads one of those low-precision constants directly reads it through a new
 * Cast to the type the op computes in. The old W16 and its Cast are left to the driver's
 * clean-up, which removes them when nothing else reads them; a weight read by anything
 * but this layer's kind of node is declined (its factors would only add parameters).
 *
 * `castAware(pass)` wraps a pass with both (the decline in `match`, the Casts after
 * `apply`); on layers without a Cast it changes nothing.
 */
import type { Graph } from '../graph/graph.js';
import type { CastLink, LayerInfo } from '../graph/layers.js';
import { intAttr } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import { DataType, newNode, type NodeProto } from '../onnx/schema.js';
import { isSkip, skip, type Applied, type BoundPass, type LayerPass, type MatchBase, type PassContext, type Skip } from './pass.js';

const TYPE_NAMES: Readonly<Record<number, string>> = { [DataType.FLOAT16]: 'fp16', [DataType.BFLOAT16]: 'bf16', [DataType.FLOAT]: 'fp32' };

/** "fp16" / "bf16" for a stored type. */
export const storedTypeName = (t: number): string => TYPE_NAMES[t] ?? `type ${t}`;

const label = (n: NodeProto): string => `${n.opType} ${n.name || n.output[0] || ''}`.trim();

/**
 * Why a Cast-fed weight cannot be rewritten alone, or undefined: the stored constant must
 * be read only by Casts to the same type, and those Casts' outputs only by nodes of the
 * layer's op at the same weight input (a weight several MatMuls or Gathers share is
 * factorized once and shared, like an fp32 one).
 */
export function castSharingProblem(layer: LayerInfo): string | undefined {
  const c = layer.cast;
  if (!c) return undefined;
  const g = layer.weight.graph;
  const what = `the ${storedTypeName(c.stored)} weight ${layer.weightName}`;
  if (g.isGraphOutput(layer.weightName)) return `${what} is also a graph output`;
  const casts: string[] = [];
  for (const r of g.consumers(layer.weightName)) {
    const isCast = r.opType === 'Cast' && (r.domain ?? '') === '' && r.input[0] === layer.weightName
      && r.attribute.some((a) => a.name === 'to' && Number(a.i) === c.to);
    if (!isCast) return `${what} is also read by ${label(r)}: its factors would add parameters`;
    casts.push(r.output[0]!);
  }
  // The Cast outputs (and Identity copies of them) are read only by layers of this op at the weight input.
  const seen = new Set<string>();
  const queue = [...casts];
  while (queue.length > 0) {
    const v = queue.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    if (g.isGraphOutput(v)) return `${what} (after its Cast) is also a graph output`;
    for (const r of g.consumers(v)) {
      if (r.opType === 'Identity' && (r.domain ?? '') === '') { queue.push(r.output[0]!); continue; }
      const sameKind = r.opType === layer.op && (r.domain ?? '') === (layer.node.domain ?? '')
        && r.input[layer.weightInput] === v && r.input.filter((x) => x === v).length === 1;
      if (!sameKind) return `${what} (after its Cast) is also read by ${label(r)}: its factors would add parameters`;
    }
  }
  return undefined;
}

/**
 * After `apply` rewrote a Cast-fed layer: each node the rewrite added (not in `before`,
 * not itself a Cast) that reads a constant of the stored type reads it through a new Cast
 * to the compute type, placed before the first such reader. Casts already there are kept,
 * so running it twice changes nothing.
 */
export function castNewFactors(cx: PassContext, g: Graph, cast: CastLink, before: ReadonlySet<NodeProto>): number {
  const added = g.nodes.filter((n) => !before.has(n) && !(n.opType === 'Cast' && (n.domain ?? '') === ''));
  const made = new Map<string, string>();
  let count = 0;
  for (const n of added) {
    // A fresh input list: the node is new, but a pass may have copied its list from the old node.
    n.input = n.input.map((v) => {
      if (!v) return v;
      let out = made.get(v);
      if (out === undefined) {
        const ref = resolveConstant(g, v);
        if (!ref || ref.tensor.dataType !== cast.stored) return v;
        out = cx.model.uniqueName(`${v}/f32`);
        const node = newNode({ opType: 'Cast', name: cx.model.uniqueName(`${v}/cast`), input: [v], output: [out], attribute: [intAttr('to', cast.to)] });
        node.docString = `onnx-lr: factor stored as ${storedTypeName(cast.stored)} like the weight it replaces`;
        g.insertBefore(n, [node]);
        made.set(v, out);
        count++;
      }
      return out;
    });
  }
  if (count > 0) g.invalidate();
  return count;
}

/** Runs `apply` and, on a Cast-fed layer, puts Casts after the new low-precision factors. */
export function applyCastFed(layer: LayerInfo, g: Graph, cx: PassContext, apply: () => Applied | Skip): Applied | Skip {
  if (!layer.cast) return apply();
  const before = new Set(g.nodes);
  const a = apply();
  if (!isSkip(a)) castNewFactors(cx, g, layer.cast, before);
  return a;
}

/** Marks a pass castAware already wrapped, so wrapping twice returns it unchanged. */
const CAST_AWARE = Symbol('castAware');

/**
 * The pass with Cast-fed weights handled: `match` declines a weight read elsewhere (with
 * the reason), `apply` casts the new factors, and a `challenge` the pass wins under
 * --method auto applies through the same Casts. Everything else is the pass's own; on
 * layers without a Cast nothing changes. Idempotent.
 */
export function castAware<M, Meth extends string>(pass: LayerPass<M, Meth>): LayerPass<M, Meth> {
  if ((pass as { [CAST_AWARE]?: true })[CAST_AWARE]) return pass;
  const challenge = pass.challenge;
  const wrapped: LayerPass<M, Meth> & { [CAST_AWARE]: true } = {
    ...pass,
    [CAST_AWARE]: true,
    match(layer: LayerInfo, cx: PassContext): M | Skip {
      const problem = castSharingProblem(layer);
      return problem ? skip(problem) : pass.match(layer, cx);
    },
    apply(m: M, ranks: readonly number[], cx: PassContext): Applied | Skip {
      const base = m as Partial<MatchBase>;
      if (!base.layer || !base.graph) return pass.apply(m, ranks, cx);
      return applyCastFed(base.layer, base.graph, cx, () => pass.apply(m, ranks, cx));
    },
  };
  if (challenge) {
    wrapped.challenge = (layer, preferred, ranks, cx, policy) => {
      if (castSharingProblem(layer)) return undefined;
      const c = challenge.call(pass, layer, preferred, ranks, cx, policy);
      if (!c?.use || !layer.cast) return c;
      // The rival binds its own (unwrapped) pass: its apply gets the Casts here.
      const b = c.use.bound;
      const bound: BoundPass = { ...b, apply: (r, cx2) => applyCastFed(layer, layer.graph, cx2, () => b.apply(r, cx2)) };
      return { ...c, use: { bound, ranks: c.use.ranks } };
    };
  }
  return wrapped;
}

/**
 * A backward graph: the model with, appended, the nodes computing Jᵀ·v, the gradient of
 * ⟨v, y⟩ with respect to chosen values z of the main graph (layer outputs), for cotangents
 * v fed as inputs, one per judged output y. ORT has no gradients, but every operator on
 * the path has a vector-Jacobian product made of ONNX operators (adjoint-rules.ts), so one
 * run gives the gradient at every z at once, where finite differences need a run per
 * direction.
 *
 * Only float32 values on a path from some z to some judged output carry gradients. A node
 * on such a path with no rule (or a form its rule does not take) stops the gradient: every
 * z upstream of it is reported uncovered, with the reason, and its gradient is not used.
 */
import type { ModelProto, NodeProto, TensorProto } from '../onnx/schema.js';
import { newValueInfo, DataType } from '../onnx/schema.js';
import { AdjointEmitter } from './adjoint-emit.js';
import { ADJOINT_RULES, type RuleContext } from './adjoint-rules.js';
import { resolveConstant } from './constants.js';
import type { Graph } from './graph.js';
import { topologicalOrder } from './node-order.js';
import { emitWeightGradient, type WeightGradient } from './weight-gradients.js';

/** The lowest opset whose forms the rules emit (Where, Expand, Scatter, broadcasting comparisons). */
export const ADJOINT_MIN_OPSET = 9;

export interface AdjointOptions {
  /** Values to differentiate with respect to. */
  targets: readonly string[];
  /** The judged graph outputs. */
  outputs: readonly string[];
  /** Concrete dims of the main graph's values at the feeds the model will run on. */
  dims: ReadonlyMap<string, readonly number[]>;
  /** Values known to be float32 (the only ones carrying gradients). */
  float32: ReadonlySet<string>;
  /**
   * Scale each output's cotangent by 1/‖y‖ in the graph (outputs count relative to their
   * size, as their rel. L2 is judged); an all-zero output counts absolutely.
   */
  relative?: boolean;
  /**
   * Targets whose output is Σ g² over every axis but this one (per channel, a vector),
   * instead of g itself: what a sensitivity needs, without copying gradients out.
   */
  perChannel?: ReadonlyMap<string, number>;
  /**
   * Targets (outputs of Conv, MatMul or Gemm nodes) whose gradient is reported for the
   * producing node's weight and bias instead (weight-gradients.ts): the node's input must
   * be in `dims` too.
   */
  weights?: ReadonlySet<string>;
}

export interface Adjoint {
  model: ModelProto;
  /** Judged output → name of the input that takes its cotangent (same shape as the output). */
  cotangents: Map<string, string>;
  /** Target → name of the graph output holding its gradient (targets that reach a judged output). */
  gradients: Map<string, string>;
  /** Target → why its gradient is incomplete (a node downstream has no product). */
  uncovered: Map<string, string>;
  /** Target in `weights` → the outputs holding its node's weight (and bias) gradient. */
  weightGradients: Map<string, WeightGradient>;
}

/** Forward closure over float32 values from `seeds`. */
function forwardClosure(g: Graph, seeds: Iterable<string>, float32: ReadonlySet<string>): Set<string> {
  const seen = new Set<string>();
  const queue: string[] = [];
  for (const s of seeds) if (float32.has(s) && !seen.has(s)) { seen.add(s); queue.push(s); }
  while (queue.length > 0) {
    const v = queue.pop()!;
    for (const n of g.consumers(v)) {
      for (const o of n.output) if (o && float32.has(o) && !seen.has(o)) { seen.add(o); queue.push(o); }
    }
  }
  return seen;
}

/** Values some output is computed from. */
function backwardClosure(g: Graph, outputs: readonly string[]): Set<string> {
  const seen = new Set<string>(outputs);
  const queue = [...outputs];
  while (queue.length > 0) {
    const p = g.producer(queue.pop()!);
    if (!p) continue;
    for (const v of [...p.input, ...g.implicitInputsOf(p)]) if (v && !seen.has(v)) { seen.add(v); queue.push(v); }
  }
  return seen;
}

export function buildAdjoint(model: ModelProto, g: Graph, opts: AdjointOptions): Adjoint {
  const opset = model.opsetImport.find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx')?.version ?? 1;
  const taken = new Set<string>();
  g.collectNames(taken);
  const e = new AdjointEmitter(opset, taken);
  const cotangents = new Map<string, string>();
  const gradients = new Map<string, string>();
  const uncovered = new Map<string, string>();
  const weightGradients = new Map<string, WeightGradient>();
  const finish = (): Adjoint => {
    const outputs = [...gradients.values(), ...[...weightGradients.values()].flatMap((w) => (w.bias ? [w.weight, w.bias] : [w.weight]))]
      .map((name) => newValueInfo({ name }));
    const inputs = [...cotangents.entries()].map(([o, name]) => newValueInfo({
      name, type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: (opts.dims.get(o) ?? []).map((d) => ({ dimValue: d })) } } },
    }));
    return {
      model: { ...model, graph: { ...g.proto, node: [...g.proto.node, ...e.nodes], initializer: [...g.proto.initializer, ...e.initializers], input: [...g.proto.input, ...inputs], output: outputs, valueInfo: [] } },
      cotangents, gradients, uncovered, weightGradients,
    };
  };
  if (opset < ADJOINT_MIN_OPSET) {
    for (const t of opts.targets) uncovered.set(t, `opset ${opset} is below ${ADJOINT_MIN_OPSET}`);
    return finish();
  }
  const reach = forwardClosure(g, opts.targets, opts.float32);
  const need = backwardClosure(g, opts.outputs);
  const relevant = (v: string): boolean => reach.has(v) && need.has(v);
  const grads = new Map<string, string[]>();
  const add = (v: string, gv: string): void => { const l = grads.get(v); if (l) l.push(gv); else grads.set(v, [gv]); };
  const summed = (v: string): string | undefined => {
    const l = grads.get(v);
    if (!l || l.length === 0) return undefined;
    let s = l[0]!;
    for (let i = 1; i < l.length; i++) s = e.one('Add', [s, l[i]!]);
    grads.set(v, [s]);
    return s;
  };
  for (const o of opts.outputs) {
    if (!relevant(o) || cotangents.has(o)) continue;
    const input = e.fresh(`cotangent/${o}`);
    cotangents.set(o, input);
    let v = input;
    if (opts.relative) {
      const ss = e.reduce('ReduceSumSquare', o, undefined, false);
      const zero = e.toFloat(e.one('Not', [e.one('Greater', [ss, e.f32([0])])]));
      v = e.one('Div', [input, e.one('Sqrt', [e.one('Add', [ss, zero])])]);
    }
    add(o, v);
  }
  const blocked = new Map<NodeProto, string>();
  const dims = (v: string): readonly number[] | undefined => opts.dims.get(v) ?? g.initializer(v)?.dims.map(Number) ?? constantOf(g, v)?.dims.map(Number);
  const order = topologicalOrder(g.proto.node, (n) => g.implicitInputsOf(n), g.proto.name ?? 'main');
  for (let i = order.length - 1; i >= 0; i--) {
    const node = g.proto.node[order[i]!]!;
    const gOut = node.output.map((o) => (o && relevant(o) ? summed(o) : undefined));
    if (gOut.every((x) => x === undefined)) continue;
    const want = node.input.map((v) => !!v && relevant(v));
    if (!want.some((w) => w)) continue;
    const op = node.opType ?? '';
    const rule = ((node.domain ?? '') === '' || node.domain === 'ai.onnx') && Object.hasOwn(ADJOINT_RULES, op) ? ADJOINT_RULES[op] : undefined;
    if (!rule) { blocked.set(node, `no gradient through ${node.opType}`); continue; }
    const cx: RuleContext = { e, node, gOut, want, dims, constant: (v) => constantOf(g, v) };
    let r: (string | undefined)[] | string;
    try {
      r = rule(cx);
    } catch (err) {
      r = (err as Error).message;
    }
    if (typeof r === 'string') { blocked.set(node, `no gradient through ${node.opType} (${r})`); continue; }
    node.input.forEach((v, j) => { if (want[j] && r[j] !== undefined) add(v, r[j] as string); });
  }
  for (const t of opts.targets) {
    if (!opts.float32.has(t)) { uncovered.set(t, 'its output is not float32 (a float16 model computes in float32 with --compute float32)'); continue; }
    if (!need.has(t)) continue;
    const down = forwardClosure(g, [t], opts.float32);
    const stop = [...blocked].find(([n]) => n.output.some((o) => down.has(o)) || n.input.some((v) => down.has(v)));
    if (stop) { uncovered.set(t, `${stop[1]} at ${stop[0].name || stop[0].opType}`); continue; }
    const s = summed(t);
    if (!s) continue;
    if (opts.weights?.has(t)) {
      const node = g.producer(t);
      const w = node ? emitWeightGradient(e, node, s, dims) : 'it is not a node output';
      if (typeof w === 'string') uncovered.set(t, w);
      else weightGradients.set(t, w);
      continue;
    }
    const axis = opts.perChannel?.get(t);
    const rank = opts.dims.get(t)?.length;
    if (axis !== undefined && rank !== undefined) {
      const a = axis < 0 ? axis + rank : axis;
      const others = Array.from({ length: rank }, (_, i) => i).filter((i) => i !== a);
      // An empty axes list would mean "every axis" before opset 18.
      gradients.set(t, others.length > 0 ? e.reduce('ReduceSumSquare', s, others, false) : e.mul(s, s));
    } else {
      // A target that is itself a graph output needs its gradient under a name of its own.
      gradients.set(t, e.one('Identity', [s]));
    }
  }
  return finish();
}

function constantOf(g: Graph, v: string): TensorProto | undefined {
  return resolveConstant(g, v)?.tensor;
}

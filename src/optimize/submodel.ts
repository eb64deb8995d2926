/**
 * The part of a model downstream of one layer, as a model of its own. Compressing a
 * layer changes only the values computed from its output, so a sensitivity trial can
 * feed that part with tensors captured once from a run of the original (the layer's
 * inputs, skip connections, Constant-node outputs) instead of running the whole model.
 * Main-graph layers only: values inside If/Loop bodies cannot be exposed as outputs.
 */
import type { Graph } from '../graph/graph.js';
import { DataType, newValueInfo, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/schema.js';
import type { ElemType, Feeds, HostTensor } from '../verify/tensor.js';

export interface Downstream {
  /** The layer's node. */
  node: NodeProto;
  /** Every node whose result depends on the layer's output (the layer's node included). */
  nodes: ReadonlySet<NodeProto>;
  /**
   * Constant nodes upstream whose values these nodes read. They go into the part as they
   * are: ORT turns Constant nodes into initializers, and a weight that is an initializer
   * is prepacked, which a fed one is not (the sums then round differently).
   */
  constants: ReadonlySet<NodeProto>;
  /** Other values these nodes read from upstream that are neither initializers nor graph inputs. */
  boundary: readonly string[];
  /** Graph outputs these nodes produce (the others do not change when the layer does). */
  outputs: readonly string[];
}

/** Inputs a node reads, its subgraphs' outer references included. */
function readsOf(g: Graph, n: NodeProto): string[] {
  return [...n.input.filter((v) => v), ...g.implicitInputsOf(n)];
}

const isConstantNode = (n: NodeProto): boolean => n.opType === 'Constant' && (n.domain ?? '') === '' && n.input.length === 0;

/** The forward closure of `node` in its graph, and what it needs from upstream. */
export function downstreamOf(g: Graph, node: NodeProto): Downstream {
  const nodes = new Set<NodeProto>([node]);
  const queue = [node];
  while (queue.length > 0) {
    const n = queue.pop()!;
    for (const o of n.output) {
      if (!o) continue;
      for (const c of g.consumers(o)) if (!nodes.has(c)) { nodes.add(c); queue.push(c); }
    }
  }
  const produced = new Set<string>();
  for (const n of nodes) for (const o of n.output) if (o) produced.add(o);
  const boundary = new Set<string>();
  const constants = new Set<NodeProto>();
  for (const n of nodes) {
    for (const v of readsOf(g, n)) {
      if (produced.has(v) || g.initializer(v) || g.isGraphInput(v)) continue;
      const p = g.producer(v);
      if (p && isConstantNode(p)) constants.add(p); else boundary.add(v);
    }
  }
  const outputs = g.proto.output.map((o) => o.name ?? '').filter((o) => produced.has(o));
  return { node, nodes, constants, boundary: [...boundary], outputs };
}

/** A shallow copy of the model whose graph also outputs `extra` (tensors are shared, not copied). */
export function captureModel(model: ModelProto, extra: readonly string[]): ModelProto {
  const g = model.graph!;
  const have = new Set(g.output.map((o) => o.name));
  const more = [...new Set(extra)].filter((v) => !have.has(v)).map((name) => newValueInfo({ name }));
  return { ...model, graph: { ...g, output: [...g.output, ...more] } };
}

const ONNX_TYPE: Record<ElemType, number> = {
  float32: DataType.FLOAT, float64: DataType.DOUBLE, float16: DataType.FLOAT16,
  int8: DataType.INT8, uint8: DataType.UINT8, int16: DataType.INT16, uint16: DataType.UINT16,
  int32: DataType.INT32, uint32: DataType.UINT32, int64: DataType.INT64, uint64: DataType.UINT64, bool: DataType.BOOL,
};

/** A graph input typed like the tensors it will be fed; dims that differ between feeds stay symbolic. */
function inputInfo(name: string, samples: readonly HostTensor[]): ValueInfoProto {
  const first = samples[0]!;
  const sameRank = samples.every((t) => t.dims.length === first.dims.length);
  const dim = first.dims.map((d, i) => (samples.every((t) => t.dims[i] === d) ? { dimValue: d } : { dimParam: `${name}_d${i}` }));
  return newValueInfo({ name, type: { tensorType: { elemType: ONNX_TYPE[first.type], ...(sameRank ? { shape: { dim } } : {}) } } });
}

export interface SubModel {
  model: ModelProto;
  /** The sub-model's feeds, one per original feed. */
  feeds: Feeds[];
}

/**
 * The downstream part as it stands in `g` now (after a rewrite of the layer): the nodes
 * the rewrite added plus the unchanged downstream nodes, fed by the original feeds and
 * the captured tensors. A string says why it cannot be built (the caller runs the whole
 * model instead).
 */
export function subModel(
  model: ModelProto, g: Graph, part: Downstream, before: ReadonlySet<NodeProto>,
  feeds: readonly Feeds[], captured: readonly Record<string, HostTensor>[],
): SubModel | string {
  // Kept in the graph's (topological) order.
  const nodes = g.proto.node.filter((n) => !before.has(n) || part.constants.has(n) || (part.nodes.has(n) && n !== part.node));
  const produced = new Set<string>();
  for (const n of nodes) for (const o of n.output) if (o) produced.add(o);
  const input: ValueInfoProto[] = [];
  const initializer: TensorProto[] = [];
  const sub: Feeds[] = feeds.map(() => ({}));
  const seen = new Set<string>();
  for (const n of nodes) {
    for (const v of readsOf(g, n)) {
      if (produced.has(v) || seen.has(v)) continue;
      seen.add(v);
      // A fed input wins over an initializer of the same name (an input's default), as in ORT.
      const source = feeds[0]?.[v] ? feeds : captured[0]?.[v] ? captured : undefined;
      if (source) {
        if (source.some((f) => !f[v])) return `${v} is missing from some of the feeds`;
        input.push(inputInfo(v, source.map((f) => f[v]!)));
        source.forEach((f, k) => { sub[k]![v] = f[v]!; });
        continue;
      }
      const t = g.initializer(v);
      if (!t) return `the part after the layer reads ${v}, which was not captured`;
      initializer.push(t);
      // An initializer that is also a graph input may be overridden, so ORT does not treat
      // it as a constant: keep it an input here too (before IR 4 every initializer is one).
      const declared = g.isGraphInput(v) ? g.proto.input.find((i) => i.name === v) : undefined;
      if (declared) input.push(declared);
    }
  }
  const missing = part.outputs.find((o) => !produced.has(o));
  if (missing !== undefined) return `the rewrite no longer produces output ${missing}`;
  const output = g.proto.output.filter((o) => part.outputs.includes(o.name ?? ''));
  return {
    model: {
      ...model,
      graph: { ...g.proto, node: nodes, input, output, initializer, valueInfo: [] },
    },
    feeds: sub,
  };
}

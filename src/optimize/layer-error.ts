/**
 * A layer's own output error on the sensitivity inputs, from the layer alone: the nodes
 * that stand for it (the original node, or the chain a trial wrote) cut out as a small
 * model and fed the layer's input as captured from one run of the original. It is what
 * the prediction of the model's error (predict-sensitivity.ts) scales, measured on the
 * same inputs as the model's error, whatever the pass and whether or not it was
 * data-aware (the factorizations' own figures are on damped statistics or on the weight).
 * Main-graph layers only, as for the downstream parts (submodel.ts).
 */
import type { Graph } from '../graph/graph.js';
import { DataType, newValueInfo, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/schema.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';

const FLOAT_ELEM: Partial<Record<HostTensor['type'], number>> = { float32: DataType.FLOAT, float64: DataType.DOUBLE, float16: DataType.FLOAT16 };

/** A typed graph input for tensors like `t`. */
function inputInfo(name: string, t: HostTensor): ValueInfoProto | undefined {
  const elemType = FLOAT_ELEM[t.type];
  if (elemType === undefined) return undefined;
  return newValueInfo({ name, type: { tensorType: { elemType, shape: { dim: t.dims.map((d) => ({ dimValue: d })) } } } });
}

export interface LayerModel {
  model: ModelProto;
  /** One per original feed. */
  feeds: Feeds[];
}

/**
 * `nodes` (in graph order) as a model of their own with `output` as its output: the
 * values they read come from the feeds, from `captured` (one record per feed), from
 * initializers, or from Constant nodes upstream. A string says why it cannot be built.
 */
export function layerModel(model: ModelProto, g: Graph, nodes: readonly NodeProto[], output: string, feeds: readonly Feeds[], captured: readonly Record<string, HostTensor>[]): LayerModel | string {
  const produced = new Set(nodes.flatMap((n) => n.output.filter((o) => o)));
  const input: ValueInfoProto[] = [];
  const initializer: TensorProto[] = [];
  const constants: NodeProto[] = [];
  const sub: Feeds[] = feeds.map(() => ({}));
  const seen = new Set<string>();
  for (const n of nodes) {
    if (g.implicitInputsOf(n).length > 0) return `${n.name ?? n.opType} reads values from outside a subgraph`;
    for (const v of n.input) {
      if (!v || produced.has(v) || seen.has(v)) continue;
      seen.add(v);
      const source = feeds[0]?.[v] ? feeds : captured[0]?.[v] ? captured : undefined;
      if (source) {
        const info = source.every((f) => f[v]) ? inputInfo(v, source[0]![v]!) : undefined;
        if (!info || source.some((f) => f[v]!.dims.join() !== source[0]![v]!.dims.join())) return `${v} is not a float tensor of one shape in every feed`;
        input.push(info);
        source.forEach((f, k) => { sub[k]![v] = f[v]!; });
        continue;
      }
      const t = g.initializer(v);
      if (t) { initializer.push(t); continue; }
      const c = g.producer(v);
      if (c && c.opType === 'Constant' && c.input.length === 0) { constants.push(c); continue; }
      return `the layer reads ${v}, which was not captured`;
    }
  }
  if (!produced.has(output)) return `the nodes do not produce ${output}`;
  return {
    model: { ...model, graph: { ...g.proto, node: [...constants, ...nodes], input, output: [newValueInfo({ name: output })], initializer, valueInfo: [] } },
    feeds: sub,
  };
}

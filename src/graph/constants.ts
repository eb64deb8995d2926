/**
 * Finds the constant tensor behind a value: an initializer (here or in an enclosing scope),
 * a Constant node, or either of those behind a chain of Identity nodes.
 */
import { DataType, newTensor, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { getAttr } from './attrs.js';
import type { Graph } from './graph.js';

export interface ConstRef {
  /** The tensor holding the data (for value_float(s)/value_int(s) a tensor made from the attribute). */
  tensor: TensorProto;
  kind: 'initializer' | 'constant';
  /** Graph where the constant lives. */
  graph: Graph;
  /** True when it comes from an enclosing scope of the graph that asked. */
  outer: boolean;
  /** Identity nodes passed through, outermost first. */
  via: NodeProto[];
  /** The value name that holds the constant (initializer name or Constant output). */
  name: string;
  /** The Constant node, when kind is 'constant'. */
  node?: NodeProto;
}

/** Tensor carried by a Constant node, or undefined for sparse/string constants. */
export function constantNodeTensor(n: NodeProto): TensorProto | undefined {
  const t = getAttr(n, 'value')?.t;
  if (t) return t;
  const vf = getAttr(n, 'value_float');
  if (vf?.f !== undefined) return newTensor({ dims: [], dataType: DataType.FLOAT, floatData: Float32Array.of(vf.f) });
  const vfs = getAttr(n, 'value_floats');
  if (vfs) return newTensor({ dims: [vfs.floats.length], dataType: DataType.FLOAT, floatData: Float32Array.from(vfs.floats) });
  const vi = getAttr(n, 'value_int');
  if (vi?.i !== undefined) return newTensor({ dims: [], dataType: DataType.INT64, int64Data: BigInt64Array.of(vi.i) });
  const vis = getAttr(n, 'value_ints');
  if (vis) return newTensor({ dims: [vis.ints.length], dataType: DataType.INT64, int64Data: BigInt64Array.from(vis.ints) });
  return undefined;
}

export function resolveConstant(g: Graph, v: string): ConstRef | undefined {
  const via: NodeProto[] = [];
  let outer = false;
  let graph: Graph | undefined = g;
  let name = v;
  for (let guard = 0; graph && guard < 10_000; guard++) {
    const p = graph.producer(name);
    if (p) {
      if (p.opType === 'Identity' && (p.domain ?? '') === '' && p.input[0]) {
        via.push(p);
        name = p.input[0];
        continue;
      }
      if (p.opType === 'Constant' && (p.domain ?? '') === '') {
        const tensor = constantNodeTensor(p);
        return tensor ? { tensor, kind: 'constant', graph, outer, via, name, node: p } : undefined;
      }
      return undefined;
    }
    const init = graph.initializer(name);
    if (init) return { tensor: init, kind: 'initializer', graph, outer, via, name };
    if (graph.isGraphInput(name)) return undefined;
    graph = graph.parent;
    outer = true;
  }
  return undefined;
}

/** Whole-model counts shared by `inspect` and the optimize report. */
import type { GraphProto, ModelProto } from '../onnx/schema.js';
import { subgraphsOf } from './attrs.js';
import { constantNodeTensor } from './constants.js';
import type { LayerInfo } from './layers.js';

export interface ModelSummary {
  irVersion: number;
  opsets: Record<string, number>;
  /** Nodes in every graph, subgraphs included. */
  nodeCount: number;
  ops: Record<string, number>;
  /** Elements of every initializer and Constant tensor, subgraphs included. */
  params: number;
  /** Sum of the decomposable layers' MACs, when all of them are known. */
  macs?: number;
}

const numel = (d: readonly number[]): number => d.reduce((a, b) => a * b, 1);

function walk(g: GraphProto, s: { nodes: number; ops: Record<string, number>; params: number }): void {
  for (const t of g.initializer) s.params += numel(t.dims);
  for (const sp of g.sparseInitializer) s.params += sp.values ? numel(sp.values.dims) : 0;
  for (const n of g.node) {
    s.nodes++;
    const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : n.opType ?? '?';
    s.ops[key] = (s.ops[key] ?? 0) + 1;
    if (n.opType === 'Constant') {
      const t = constantNodeTensor(n);
      if (t) s.params += numel(t.dims);
    }
    for (const sg of subgraphsOf(n)) walk(sg, s);
  }
}

export function summarize(model: ModelProto, layers?: readonly LayerInfo[]): ModelSummary {
  const s = { nodes: 0, ops: {} as Record<string, number>, params: 0 };
  if (model.graph) walk(model.graph, s);
  const opsets: Record<string, number> = {};
  for (const o of model.opsetImport) opsets[o.domain || 'ai.onnx'] = o.version ?? 0;
  const ops = Object.fromEntries(Object.entries(s.ops).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
  const macsKnown = layers && layers.length > 0 && layers.every((l) => l.macs !== undefined);
  return {
    irVersion: model.irVersion ?? 0, opsets, nodeCount: s.nodes, ops, params: s.params,
    macs: macsKnown ? layers!.reduce((a, l) => a + l.macs!, 0) : undefined,
  };
}

/** "Conv 62→58, MatMul 9→18 (+4 nodes)" style diff of two op histograms. */
export function opDiff(before: Record<string, number>, after: Record<string, number>): { op: string; before: number; after: number }[] {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  return keys
    .map((op) => ({ op, before: before[op] ?? 0, after: after[op] ?? 0 }))
    .filter((d) => d.before !== d.after)
    .sort((a, b) => a.op.localeCompare(b.op));
}

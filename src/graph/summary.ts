/** Whole-model counts shared by `inspect` and the optimize report, and the model's fingerprint. */
import { createHash } from 'node:crypto';
import type { GraphProto, ModelProto } from '../onnx/schema.js';
import { subgraphsOf } from './attrs.js';
import { constantNodeTensor } from './constants.js';
import { numel, type LayerInfo } from './layers.js';

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
  /** The model's structure hash (modelFingerprint): plans carry it to be checked against the model they are applied to. */
  fingerprint?: string;
}


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

/**
 * A hash of the model's structure: every node (name, op, inputs, outputs, the shapes of
 * its tensor attributes), every initializer's name, type and shape, and the graphs'
 * inputs and outputs, at every depth. Weight values are left out (a fine-tuned copy
 * keeps its plans); node order is too (graphs are sorted before they are rewritten).
 */
export function modelFingerprint(model: ModelProto): string {
  const items: string[] = [];
  const visit = (g: GraphProto, at: string): void => {
    for (const v of g.input) items.push(`${at}in|${v.name ?? ''}`);
    for (const v of g.output) items.push(`${at}out|${v.name ?? ''}`);
    for (const t of g.initializer) items.push(`${at}init|${t.name ?? ''}|${t.dataType ?? 0}|${t.dims.join('x')}`);
    for (const sp of g.sparseInitializer) items.push(`${at}sparse|${sp.values?.name ?? ''}|${sp.values?.dataType ?? 0}|${sp.dims.join('x')}`);
    for (const n of g.node) {
      const tensors = n.attribute.filter((a) => a.t).map((a) => `${a.name ?? ''}=${a.t!.dataType ?? 0}:${a.t!.dims.join('x')}`);
      items.push(`${at}node|${n.domain ?? ''}|${n.opType ?? ''}|${n.name ?? ''}|${n.input.join(',')}|${n.output.join(',')}|${tensors.join(',')}`);
      for (const a of n.attribute) {
        if (a.g) visit(a.g, `${at}${n.name ?? n.output[0] ?? ''}.${a.name ?? ''}/`);
        a.graphs.forEach((sg, i) => visit(sg, `${at}${n.name ?? n.output[0] ?? ''}.${a.name ?? ''}[${i}]/`));
      }
    }
  };
  if (model.graph) visit(model.graph, '');
  items.sort();
  const h = createHash('sha256');
  for (const x of items) h.update(`${x}\n`);
  return h.digest('hex').slice(0, 16);
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
    fingerprint: modelFingerprint(model),
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

/**
 * One rewrite tried on the live graph and undone: sensitivity trials and the latency
 * screen both apply a pass, look at the chain it wrote, and must leave the graph (and the
 * passes' shared caches) exactly as they were, whatever happens in between.
 */
import type { Graph } from '../graph/graph.js';
import type { NodeProto } from '../onnx/schema.js';
import { isSkip, type Applied, type BoundPass, type PassContext } from '../rewrite/pass.js';
import type { Skip } from '../rewrite/skip.js';

/**
 * Applies `pass` at `ranks`, hands `use` what it applied, the chain it wrote (the nodes
 * that were not there before) and the nodes that were, then rolls the graph back
 * (Graph.checkpoint/rollback) and restores `cx.shared`. A pass that declines gives its Skip.
 */
export async function withRewrite<T>(
  g: Graph, pass: BoundPass, ranks: readonly number[], cx: PassContext,
  use: (applied: Applied, chain: NodeProto[], before: ReadonlySet<NodeProto>) => Promise<T>,
): Promise<T | Skip> {
  const cp = g.checkpoint();
  const shared = new Map(cx.shared);
  try {
    const applied = pass.apply(ranks, cx);
    if (isSkip(applied)) return applied;
    const before = new Set(cp.nodes);
    return await use(applied, g.proto.node.filter((n) => !before.has(n)), before);
  } finally {
    g.rollback(cp);
    cx.shared.clear();
    for (const [k, v] of shared) cx.shared.set(k, v);
  }
}

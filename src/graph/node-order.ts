/**
 * Ordering and pruning a graph's node list (graph.ts's topoSort and removeDeadNodes), as
 * functions of the nodes and what each reads from outer scope through its subgraphs.
 */
import { LrError } from '../errors.js';
import type { NodeProto } from '../onnx/schema.js';

/** Values a node reads through its subgraphs from the graph around it. */
export type ImplicitInputs = (n: NodeProto) => Iterable<string>;

/**
 * Indices of `nodes` in a topological order, keeping the original order among ready nodes.
 * Values not produced here (inputs, initializers, outer scope) are available from the start.
 */
export function topologicalOrder(nodes: readonly NodeProto[], implicitInputsOf: ImplicitInputs, graphName: string): number[] {
  const producerIdx = new Map<string, number>();
  nodes.forEach((n, i) => n.output.forEach((o) => { if (o) producerIdx.set(o, i); }));
  const pending = new Array<number>(nodes.length).fill(0);
  const dependents: number[][] = nodes.map(() => []);
  nodes.forEach((n, i) => {
    const deps = new Set<number>();
    for (const v of [...n.input, ...implicitInputsOf(n)]) {
      const p = v ? producerIdx.get(v) : undefined;
      if (p !== undefined && p !== i) deps.add(p);
      else if (p === i) throw new LrError('parse', `graph ${graphName}: node ${n.name ?? n.opType} reads its own output`);
    }
    pending[i] = deps.size;
    for (const d of deps) dependents[d].push(i);
  });
  // A binary heap keyed by original index keeps the order stable.
  const heap: number[] = [];
  const push = (x: number): void => {
    heap.push(x);
    for (let k = heap.length - 1; k > 0;) {
      const p = (k - 1) >> 1;
      if (heap[p] <= heap[k]) break;
      [heap[p], heap[k]] = [heap[k], heap[p]];
      k = p;
    }
  };
  const pop = (): number => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      for (let k = 0; ;) {
        const l = 2 * k + 1, r = l + 1;
        let m = k;
        if (l < heap.length && heap[l] < heap[m]) m = l;
        if (r < heap.length && heap[r] < heap[m]) m = r;
        if (m === k) break;
        [heap[m], heap[k]] = [heap[k], heap[m]];
        k = m;
      }
    }
    return top;
  };
  pending.forEach((c, i) => { if (c === 0) push(i); });
  const order: number[] = [];
  while (heap.length > 0) {
    const i = pop();
    order.push(i);
    for (const d of dependents[i]) if (--pending[d] === 0) push(d);
  }
  if (order.length !== nodes.length) {
    throw new LrError('parse', `graph ${graphName} has a cycle (${nodes.length - order.length} nodes on or after it)`);
  }
  return order;
}

/** The nodes none of whose outputs is used (by a live node or as a graph output), transitively. */
export function deadNodes(nodes: readonly NodeProto[], implicitInputsOf: ImplicitInputs, isGraphOutput: (v: string) => boolean): Set<NodeProto> {
  // Worklist over use counts: linear in the graph size (a dead chain of n nodes used to
  // take n passes over the whole graph).
  const uses = new Map<string, number>();
  const producers = new Map<string, NodeProto[]>();
  const usedBy = (n: NodeProto): Set<string> => {
    const s = new Set<string>(n.input.filter((x) => x));
    for (const v of implicitInputsOf(n)) s.add(v);
    return s;
  };
  for (const n of nodes) {
    for (const v of usedBy(n)) uses.set(v, (uses.get(v) ?? 0) + 1);
    for (const o of n.output) if (o) { const l = producers.get(o); if (l) l.push(n); else producers.set(o, [n]); }
  }
  const isDead = (n: NodeProto): boolean =>
    n.output.length > 0 && n.output.every((o) => !o || ((uses.get(o) ?? 0) === 0 && !isGraphOutput(o)));
  const dead = new Set<NodeProto>();
  const queue = nodes.filter(isDead);
  while (queue.length > 0) {
    const n = queue.pop()!;
    if (dead.has(n)) continue;
    dead.add(n);
    for (const v of usedBy(n)) {
      const c = uses.get(v)! - 1;
      uses.set(v, c);
      if (c === 0) for (const p of producers.get(v) ?? []) if (!dead.has(p) && isDead(p)) queue.push(p);
    }
  }
  return dead;
}

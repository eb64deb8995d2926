/**
 * A small mutable view over a ModelProto: producers and consumers by value name, nested
 * subgraphs that see outer-scope values, topological order, unique names, node
 * replacement and dead-code removal. The protobuf objects are edited in place, so every
 * field the view does not know about survives untouched.
 */
import { LrError } from '../errors.js';
import { newValueInfo, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/schema.js';
import { freshName, namesOf } from '../onnx/names.js';
import { subgraphsOf } from './attrs.js';
import { deadNodes, topologicalOrder } from './node-order.js';

const normDomain = (d: string | undefined): string => (d === undefined || d === 'ai.onnx' ? '' : d);

export class Model {
  readonly root: Graph;
  private readonly names = new Set<string>();
  /** Names reserved since construction, in order (lets a trial rewrite be rolled back). */
  private readonly reserved: string[] = [];
  private readonly graphs = new WeakMap<GraphProto, Graph>();

  constructor(readonly proto: ModelProto) {
    if (!proto.graph) throw new LrError('parse', 'the model has no graph');
    this.root = new Graph(this, proto.graph, undefined, undefined);
    this.graphs.set(proto.graph, this.root);
    for (const g of this.allGraphs()) g.collectNames(this.names);
  }

  /** The opset version imported for a domain ('' = the default ONNX domain). */
  opsetVersion(domain = ''): number | undefined {
    const d = normDomain(domain);
    return this.proto.opsetImport.find((o) => normDomain(o.domain) === d)?.version;
  }

  /** A name not used anywhere in the model (values, nodes, initializers), then reserved. */
  uniqueName(base: string): string {
    const name = freshName(this.names, base);
    this.reserved.push(name);
    return name;
  }

  /** A point to return to with releaseNames (trial rewrites that are undone). */
  nameMark(): number {
    return this.reserved.length;
  }

  /** Frees the names reserved since `mark`, so an undone trial leaves no trace in later names. */
  releaseNames(mark: number): void {
    for (const n of this.reserved.splice(mark)) this.names.delete(n);
  }

  /** Frees names that are no longer in the model (nodes merged away), for reuse. */
  forgetNames(names: Iterable<string>): void {
    for (const n of names) this.names.delete(n);
  }

  /** The Graph view of a subgraph proto, created once. */
  graphOf(proto: GraphProto, parent: Graph, owner: NodeProto): Graph {
    let g = this.graphs.get(proto);
    if (!g) {
      g = new Graph(this, proto, parent, owner);
      this.graphs.set(proto, g);
    }
    return g;
  }

  /** Every graph, outer before inner. */
  allGraphs(): Graph[] {
    const out: Graph[] = [];
    const visit = (g: Graph): void => {
      out.push(g);
      for (const c of g.children()) visit(c);
    };
    visit(this.root);
    return out;
  }
}

interface Index {
  producer: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  initializers: Map<string, TensorProto>;
  inputs: Set<string>;
  outputs: Set<string>;
}

/**
 * A state of one graph to return to (Graph.checkpoint): its node, initializer and input
 * lists (before IR 4 an initializer is also an input) and the model's reserved names.
 */
export interface Checkpoint {
  readonly graph: Graph;
  readonly nodes: readonly NodeProto[];
  readonly initializers: readonly TensorProto[];
  readonly inputs: readonly ValueInfoProto[];
  readonly names: number;
}

export class Graph {
  private index: Index | undefined;

  constructor(
    readonly model: Model,
    readonly proto: GraphProto,
    readonly parent: Graph | undefined,
    /** The node whose attribute holds this subgraph. */
    readonly owner: NodeProto | undefined,
  ) {}

  get nodes(): NodeProto[] { return this.proto.node; }

  /** Marks indexes stale here and in enclosing graphs (their implicit inputs may change). */
  invalidate(): void {
    for (let g: Graph | undefined = this; g; g = g.parent) g.index = undefined;
  }

  private idx(): Index {
    if (this.index) return this.index;
    const producer = new Map<string, NodeProto>();
    const consumers = new Map<string, NodeProto[]>();
    for (const n of this.proto.node) {
      for (const o of n.output) if (o) producer.set(o, n);
      const used = new Set<string>(n.input.filter((x) => x));
      for (const v of this.implicitInputsOf(n)) used.add(v);
      for (const v of used) {
        const list = consumers.get(v);
        if (list) list.push(n); else consumers.set(v, [n]);
      }
    }
    this.index = {
      producer,
      consumers,
      initializers: new Map(this.proto.initializer.filter((t) => t.name).map((t) => [t.name!, t])),
      inputs: new Set(this.proto.input.map((v) => v.name ?? '')),
      outputs: new Set(this.proto.output.map((v) => v.name ?? '')),
    };
    return this.index;
  }

  children(): Graph[] {
    const out: Graph[] = [];
    for (const n of this.proto.node) for (const sg of subgraphsOf(n)) out.push(this.model.graphOf(sg, this, n));
    return out;
  }

  producer(v: string): NodeProto | undefined { return this.idx().producer.get(v); }
  /** Nodes of this graph that read v, directly or from inside one of their subgraphs. */
  consumers(v: string): readonly NodeProto[] { return this.idx().consumers.get(v) ?? []; }
  initializer(v: string): TensorProto | undefined { return this.idx().initializers.get(v); }
  isGraphOutput(v: string): boolean { return this.idx().outputs.has(v); }
  isGraphInput(v: string): boolean { return this.idx().inputs.has(v); }

  /** True when v is defined in this graph (input, initializer or node output). */
  defines(v: string): boolean {
    const i = this.idx();
    return i.producer.has(v) || i.initializers.has(v) || i.inputs.has(v);
  }

  /** Names a node's subgraphs read from enclosing scopes. */
  implicitInputsOf(node: NodeProto): string[] {
    const out = new Set<string>();
    for (const sg of subgraphsOf(node)) for (const v of outerReferences(sg)) out.add(v);
    return [...out];
  }

  /**
   * The state to return to after a trial rewrite (MLIR's rewriter undoes through the IR's
   * API, never by editing lists by hand). Edits must go through this graph: nodes and
   * tensors already in it are not copied, only the lists that hold them.
   */
  checkpoint(): Checkpoint {
    return {
      graph: this,
      nodes: [...this.proto.node],
      initializers: [...this.proto.initializer],
      inputs: [...this.proto.input],
      names: this.model.nameMark(),
    };
  }

  /** Restores the lists saved by `checkpoint`, frees the names reserved since, and drops stale indexes. */
  rollback(cp: Checkpoint): void {
    if (cp.graph !== this) throw new Error('rollback: the checkpoint belongs to another graph');
    restoreList(this.proto.node, cp.nodes);
    restoreList(this.proto.initializer, cp.initializers);
    restoreList(this.proto.input, cp.inputs);
    this.model.releaseNames(cp.names);
    this.invalidate();
  }

  /** Inserts nodes in place of `node` (same position), or removes it when `replacement` is empty. */
  replaceNode(node: NodeProto, replacement: readonly NodeProto[]): void {
    const i = this.proto.node.indexOf(node);
    if (i < 0) throw new Error(`replaceNode: node ${node.name} is not in this graph`);
    this.proto.node.splice(i, 1, ...replacement);
    this.invalidate();
  }

  insertBefore(anchor: NodeProto, nodes: readonly NodeProto[]): void {
    this.insertAt(anchor, 0, nodes, 'insertBefore');
  }

  insertAfter(anchor: NodeProto, nodes: readonly NodeProto[]): void {
    this.insertAt(anchor, 1, nodes, 'insertAfter');
  }

  private insertAt(anchor: NodeProto, offset: 0 | 1, nodes: readonly NodeProto[], what: string): void {
    const i = this.proto.node.indexOf(anchor);
    if (i < 0) throw new Error(`${what}: node ${anchor.name} is not in this graph`);
    this.proto.node.splice(i + offset, 0, ...nodes);
    this.invalidate();
  }

  addInitializer(t: TensorProto): void {
    this.proto.initializer.push(t);
    // Before IR 4 every initializer must also be a graph input, typed like the tensor
    // (the ONNX checker refuses an input without a type).
    if ((this.model.proto.irVersion ?? 0) < 4 && t.name) {
      const shape = { dim: t.dims.map((d) => ({ dimValue: d })) };
      this.proto.input.push(newValueInfo({ name: t.name, type: { tensorType: { elemType: t.dataType, shape } } }));
    }
    this.invalidate();
  }

  /** Removes nodes none of whose outputs is used; returns how many were removed. */
  removeDeadNodes(): number {
    // A graph that declares no outputs has nothing live by declaration: removing every
    // node would leave an empty graph that ORT refuses, so leave it as it is.
    if (this.proto.output.length === 0) return 0;
    const dead = deadNodes(this.proto.node, (n) => this.implicitInputsOf(n), (v) => this.isGraphOutput(v));
    if (dead.size === 0) return 0;
    this.proto.node = this.proto.node.filter((n) => !dead.has(n));
    this.invalidate();
    return dead.size;
  }

  /**
   * Removes initializers no node (here or in a subgraph) reads. An initializer that is also
   * listed as a graph input (old IR) loses that input entry too.
   */
  removeUnusedInitializers(): number {
    const unused = new Set(
      this.proto.initializer
        .map((t) => t.name ?? '')
        .filter((n) => this.consumers(n).length === 0 && !this.isGraphOutput(n)),
    );
    if (unused.size === 0) return 0;
    this.proto.initializer = this.proto.initializer.filter((t) => !unused.has(t.name ?? ''));
    this.proto.input = this.proto.input.filter((v) => !unused.has(v.name ?? ''));
    this.invalidate();
    return unused.size;
  }

  /**
   * Sorts nodes topologically (real models ship unsorted), keeping the original order
   * among ready nodes. Values not produced here (inputs, initializers, outer scope) are
   * available from the start.
   */
  topoSort(): void {
    const nodes = this.proto.node;
    const order = topologicalOrder(nodes, (n) => this.implicitInputsOf(n), this.proto.name ?? '');
    if (order.some((v, k) => v !== k)) {
      this.proto.node = order.map((i) => nodes[i]);
      this.invalidate();
    }
  }

  /** This graph's own names (not its subgraphs', which have their own Graph views) added to `into`. */
  collectNames(into: Set<string>): void {
    namesOf(this.proto, into, false);
  }
}

/**
 * Makes `list` hold `saved` again, in place: the list stays the object the proto (and any
 * holder of `nodes`) refers to; no spread, which overflows the stack on huge graphs.
 */
function restoreList<T>(list: T[], saved: readonly T[]): void {
  list.length = saved.length;
  for (let i = 0; i < saved.length; i++) list[i] = saved[i]!;
}

/** Names a subgraph reads that it does not define itself (recursively through nested subgraphs). */
export function outerReferences(g: GraphProto): Set<string> {
  const defined = new Set<string>();
  for (const v of g.input) if (v.name) defined.add(v.name);
  for (const t of g.initializer) if (t.name) defined.add(t.name);
  for (const s of g.sparseInitializer) if (s.values?.name) defined.add(s.values.name);
  for (const n of g.node) for (const o of n.output) if (o) defined.add(o);
  const out = new Set<string>();
  for (const n of g.node) {
    for (const v of n.input) if (v && !defined.has(v)) out.add(v);
    for (const sg of subgraphsOf(n)) for (const v of outerReferences(sg)) if (!defined.has(v)) out.add(v);
  }
  for (const v of g.output) if (v.name && !defined.has(v.name)) out.add(v.name);
  return out;
}

/**
 * What plain (stats.ts) and paired (anchored-stats.ts) statistics share: the original
 * model's accumulator per statistic and its finishing (means, NaN checks), the model
 * copies that expose tensors as graph outputs, the byte budget's grouping, and the shape
 * probe that sizes the exposed tensors and checks our conv geometry against ORT's.
 */
import { Model } from '../graph/graph.js';
import { deadNodes } from '../graph/node-order.js';
import type { LayerInfo } from '../graph/layers.js';
import { encodeModel } from '../onnx/codec.js';
import { mapTensors } from '../onnx/file.js';
import { newNode, newValueInfo, type ModelProto, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { isExternal, tensorRawBytes, type ExternalBytes } from '../onnx/tensor.js';
import { ok, type Result } from '../errors.js';
import { openFetcher } from '../verify/intermediate.js';
import type { SessionOptions } from '../verify/session.js';
import { toNumbers, type Feeds, type HostTensor } from '../verify/tensor.js';
import { patchDimOf, resolveInputGeometry, type InputGeometry } from './patch-geometry.js';
import type { FloatData } from './sample-blocks.js';
import { accumulateIndexCounts } from './index-counts.js';
import { accumulateSlices } from './accumulate-slices.js';
import type { IndexSpec, LayerStats, SliceSpec, StatSpec } from './stats-plan.js';

export interface Acc {
  spec: StatSpec;
  stats: LayerStats;
  sum: Float64Array;
  patchSum?: Float64Array;
  /** Set when the layer's tensor turns out not to fit; the layers become unavailable. */
  failed?: string;
  /** Input dims (joined) → how the conv reads them, or why it cannot. */
  geoCache: Map<string, InputGeometry | string>;
}

export function newAcc(spec: StatSpec): Acc {
  if (spec.kind !== 'conv') {
    const k = spec.k;
    return {
      spec, sum: new Float64Array(k), geoCache: new Map(),
      stats: { kind: 'matrix', input: spec.tensor, gram: new Float64Array(k * k), dim: k, groups: 1, count: 0, mean: new Float64Array(k) },
    };
  }
  const g = spec.conv.group;
  const s = spec.conv.S / g;
  const stats: LayerStats = { kind: 'conv', input: spec.tensor, gram: new Float64Array(g * s * s), dim: s, groups: g, count: 0, mean: new Float64Array(g * s) };
  const acc: Acc = { spec, stats, sum: new Float64Array(g * s), geoCache: new Map() };
  if (spec.patches) {
    // A ConvTranspose's patches span its own kernel; `conv` is only its 1x1 channel placement.
    const d = patchDimOf({ channels: spec.conv.S, groups: g, kernel: spec.scatter?.kernel ?? spec.conv.kernel });
    stats.patchGram = new Float64Array(g * d * d);
    stats.patchDim = d;
    stats.patchCount = 0;
    stats.patchTotal = 0;
    stats.patchMean = new Float64Array(g * d);
    acc.patchSum = new Float64Array(g * d);
  }
  return acc;
}

/** A Gather's lookup counts (its statistics: rowCounts, count = lookups in range, indexOutOfRange). */
export interface IndexAcc {
  spec: IndexSpec;
  stats: LayerStats;
  failed?: string;
}

export function newIndexAcc(spec: IndexSpec): IndexAcc {
  return {
    spec,
    stats: { kind: 'matrix', input: spec.tensor, gram: new Float64Array(0), dim: spec.rows, groups: 1, count: 0, mean: new Float64Array(0), rowCounts: new Float64Array(spec.rows), indexOutOfRange: 0 },
  };
}

export const isIndexAcc = (a: { spec: { kind: string } }): a is IndexAcc => a.spec.kind === 'index';

/** A batched MatMul weight's per-slice Grams (stats: groups = slices, gram [slices, K, K], count per slice). */
export interface SliceAcc {
  spec: SliceSpec;
  stats: LayerStats;
  sum: Float64Array;
  failed?: string;
}

export function newSliceAcc(spec: SliceSpec): SliceAcc {
  const n = spec.batch.reduce((a, b) => a * b, 1);
  const k = spec.k;
  return { spec, sum: new Float64Array(n * k), stats: { kind: 'matrix', input: spec.tensor, gram: new Float64Array(n * k * k), dim: k, groups: n, count: 0, mean: new Float64Array(n * k) } };
}

export const isSliceAcc = (a: { spec: { kind: string } }): a is SliceAcc => a.spec.kind === 'slices';

/** Folds one fetched data tensor into every slice's Gram it meets; returns a reason when it does not fit. */
export function accumulateSliceAcc(acc: SliceAcc, t: HostTensor): string | undefined {
  const x = floatData(t);
  if (!x) return `its input is ${t.type}, not a float tensor`;
  const added = accumulateSlices(acc.stats.gram, x, t.dims, acc.spec.batch, acc.spec.side, acc.spec.k, acc.sum);
  if (typeof added === 'string') return added;
  acc.stats.count += added;
  return undefined;
}

/** Counts one fetched indices tensor (int32/int64, any shape, negative from the end); out-of-range ones are counted apart, never an error. */
export function accumulateIndices(acc: IndexAcc, t: HostTensor): string | undefined {
  if (t.type !== 'int64' && t.type !== 'int32') return `its indices are ${t.type}, not int32 or int64`;
  const st = acc.stats;
  const bad = accumulateIndexCounts(st.rowCounts!, t.data as BigInt64Array | Int32Array);
  st.indexOutOfRange! += bad;
  st.count += t.data.length - bad;
  return undefined;
}

/** A reason when no lookup reached the Gather; lookups all out of range still finish (the pass says so and weights rows equally). */
export function finishIndex(acc: IndexAcc): string | undefined {
  const st = acc.stats;
  return st.count === 0 && st.indexOutOfRange === 0 ? 'no calibration lookups reached it' : undefined;
}

export function floatData(t: HostTensor): FloatData | undefined {
  if (t.type === 'float32' || t.type === 'float64') return t.data as FloatData;
  if (t.type === 'float16') return toNumbers(t);
  return undefined;
}


export function allFinite(a: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return false;
  return true;
}

export function finish(acc: Pick<Acc, 'stats' | 'sum' | 'patchSum'>): string | undefined {
  const st = acc.stats;
  if (st.count === 0) return 'no calibration rows reached it';
  // NaN/Inf anywhere in the input reaches the gram's diagonal, so the diagonal and sums suffice.
  const d = st.dim;
  for (let g = 0; g < st.groups; g++) {
    for (let j = 0; j < d; j++) if (!Number.isFinite(st.gram[g * d * d + j * d + j]!)) return 'its input activations have NaN or Inf';
  }
  if (!allFinite(acc.sum)) return 'its input activations have NaN or Inf';
  for (let i = 0; i < acc.sum.length; i++) st.mean[i] = acc.sum[i]! / st.count;
  if (st.patchGram && acc.patchSum) {
    if (!allFinite(acc.patchSum)) return 'its input activations have NaN or Inf';
    for (let i = 0; i < acc.patchSum.length; i++) st.patchMean![i] = acc.patchSum[i]! / Math.max(1, st.patchCount!);
  }
  return undefined;
}

function inlined(t: TensorProto, ext: ExternalBytes): TensorProto {
  const c: TensorProto = { ...t, externalData: [], rawData: tensorRawBytes(t, ext) };
  delete c.dataLocation;
  return c;
}

/**
 * The model cut down to computing `names` (its only outputs) with `extraNodes` added: only
 * the nodes they depend on, and the initializers those read. ORT runs every node of a graph
 * whatever is fetched: on ISNet at 1024² a tensor two nodes from the input took 6.9 s to
 * fetch from the whole model and 0.11 s from its ancestors, so the statistics of early
 * layers (and anchored waves early in the model) need not pay for the rest. Every graph
 * input stays (the feeds name them all). External payloads are inlined.
 */
export function withOutputs(model: ModelProto, names: readonly string[], extraNodes: readonly NodeProto[], ext: ExternalBytes | undefined): Uint8Array {
  const g = model.graph!;
  const nodes = [...g.node, ...extraNodes];
  const wanted = new Set(names);
  // Subgraphs read outer values implicitly: the graph knows which.
  const root = new Model({ ...model, graph: { ...g, node: nodes } }).root;
  const dead = deadNodes(nodes, (n) => root.implicitInputsOf(n), (v) => wanted.has(v));
  const kept = nodes.filter((n) => !dead.has(n));
  const read = new Set<string>([...g.input.map((i) => i.name ?? ''), ...names]);
  for (const n of kept) for (const v of [...n.input, ...root.implicitInputsOf(n)]) read.add(v);
  let copy: ModelProto = {
    ...model,
    graph: { ...g, node: kept, initializer: g.initializer.filter((t) => read.has(t.name ?? '')), output: [...wanted].map((name) => newValueInfo({ name })) },
  };
  if (ext) copy = mapTensors(copy, (t) => (isExternal(t) ? inlined(t, ext) : t));
  return encodeModel(copy);
}

const feedElements = (f: Feeds): number => Object.values(f).reduce((a, t) => a + t.data.length, 0);

/** Greedy split of tensors (in order) into groups whose byte sizes stay within the budget. */
export function groupByBudget(sizes: readonly { name: string; bytes: number }[], budget: number): string[][] {
  const groups: string[][] = [];
  let cur: string[] = [];
  let used = 0;
  for (const { name, bytes } of sizes) {
    if (cur.length > 0 && used + bytes > budget) { groups.push(cur); cur = []; used = 0; }
    cur.push(name);
    used += bytes;
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}

/**
 * Dims of the tensors the accumulators read (and of the conv outputs, to check our conv
 * geometry against ORT's) from one run of a copy that outputs only their Shape; a conv
 * whose placement does not fit is marked failed. Returns the dims and the runs made.
 */
export async function probeShapes(
  model: Model, proto: ModelProto, accs: Iterable<{ spec: StatSpec | IndexSpec | SliceSpec; failed?: string }>, probeFeed: Feeds, external: ExternalBytes | undefined, sessionOpts: SessionOptions,
  known?: ReadonlyMap<string, readonly number[]>,
): Promise<Result<{ sizes: Map<string, number[]>; runs: number }>> {
  const inputNames = new Set(Object.keys(probeFeed));
  const list = [...accs];
  let runs = 0;
  const sizes = new Map<string, number[]>(Object.entries(probeFeed).map(([n, t]) => [n, [...t.dims]]));
  let probed = [...new Set(list.flatMap((a) => [a.spec.tensor, ...(a.spec.kind === 'conv' && a.spec.output ? [a.spec.output] : [])]))]
    .filter((t) => !inputNames.has(t));
  // Dims learned at the same input dims stand for the run (every run still checks the dims it reads).
  const sameInputs = known !== undefined && Object.entries(probeFeed).every(([n, t]) => sameDims(known.get(n), t.dims));
  if (sameInputs && probed.every((t) => known.has(t))) {
    for (const t of probed) sizes.set(t, [...known.get(t)!]);
    probed = [];
  }
  if (probed.length > 0) {
    const names = new Set<string>();
    for (const g of model.allGraphs()) g.collectNames(names);
    const unique = (base: string): string => { let n = base; for (let i = 1; names.has(n); i++) n = `${base}_${i}`; names.add(n); return n; };
    const nodes: NodeProto[] = [];
    const shapeOf = new Map<string, string>();
    for (const t of probed) {
      const out = unique(`${t}/calib_shape`);
      nodes.push(newNode({ opType: 'Shape', name: unique(`${t}/calib_shape_node`), input: [t], output: [out] }));
      shapeOf.set(t, out);
    }
    const f = await openFetcher({ bytes: withOutputs(proto, [...shapeOf.values()], nodes, external) }, [...shapeOf.values()], sessionOpts);
    if (!f.ok) return f;
    try {
      const r = await f.value.run(probeFeed);
      if (!r.ok) return r;
      for (const [t, out] of shapeOf) sizes.set(t, Array.from(r.value[out]!.data as BigInt64Array, Number));
    } finally {
      await f.value.release();
    }
    runs++;
  }
  for (const acc of list) {
    const spec = acc.spec;
    if (spec.kind !== 'conv') continue;
    const inDims = sizes.get(spec.tensor);
    const outDims = sizes.get(spec.output);
    if (!inDims || !outDims) continue;
    const geo = resolveInputGeometry(spec.conv, spec.scatter, inDims);
    // A Conv's patches are one per output position, a ConvTranspose's scatter patches too.
    if (typeof geo === 'string') acc.failed = geo;
    else if (outDims.length !== inDims.length || !geo.patches.outSpatial.every((d, i) => d === outDims[i + 2])) {
      acc.failed = `ORT's output dims [${outDims.join(', ')}] differ from the computed spatial dims [${geo.patches.outSpatial.join(', ')}]`;
    }
  }
  return ok({ sizes, runs });
}

const sameDims = (a: readonly number[] | undefined, b: readonly number[]): boolean => a !== undefined && a.length === b.length && a.every((d, i) => d === b[i]);

/** The largest feed: the one a run's byte budget must hold. */
export function largestFeed(feeds: Iterable<Feeds>): Feeds | undefined {
  let best: Feeds | undefined;
  for (const f of feeds) if (!best || feedElements(f) > feedElements(best)) best = f;
  return best;
}

/**
 * Finishes each layer's accumulator once (layers reading the same tensor share one) and
 * sorts the layers: statistics for those that finished, the reason into `unavailable`
 * for the others.
 */
export function finishLayers<A>(
  layers: readonly LayerInfo[], accOf: (name: string) => A | undefined, finishOnce: (a: A) => string | undefined,
  statsOf: (a: A) => LayerStats, unavailable: Map<string, string>,
): Map<string, LayerStats> {
  const stats = new Map<string, LayerStats>();
  const finished = new Map<A, string | undefined>();
  for (const layer of layers) {
    const acc = accOf(layer.name);
    if (acc === undefined) continue;
    if (!finished.has(acc)) finished.set(acc, finishOnce(acc));
    const why = finished.get(acc);
    if (why) unavailable.set(layer.name, why);
    else stats.set(layer.name, statsOf(acc));
  }
  return stats;
}

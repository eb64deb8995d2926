/**
 * Per-layer input statistics over a calibration set, for data-aware decomposition
 * (DESIGN-NOTES "Data-aware compression": with XᵀX = L·Lᵀ, the SVD of LᵀW minimises the
 * output error ‖X(W − W')‖).
 *
 * How: a copy of the model lists the layers' input tensors as graph outputs; ORT runs it
 * on every calibration feed and each fetched tensor is folded into Float64 running sums
 * (accumulate.ts), batch by batch, so memory holds one batch of activations at a time.
 * When the exposed tensors of one run would exceed `maxBytesPerRun` (estimated from
 * their dims, found by a first run of a copy that outputs only their Shape), the layers
 * are split into groups, one ORT session and one pass over the data each.
 *
 * Only main-graph layers can be reached: tensors inside If/Loop/Scan bodies cannot be
 * made graph outputs. Those layers, and any whose statistics cannot be collected, are
 * returned in `unavailable` with the reason.
 *
 * Statistics per layer (LayerStats; all sums, not averages — divide by the count):
 * - Gemm / MatMul, weight on the right (Y = X·W, W [K, N]): X's leading dims are
 *   flattened into rows x ∈ ℝᴷ; gram = Σ x·xᵀ [K, K], count = rows. A Gemm with transA=1
 *   reads A [K, M]: its columns are the vectors.
 * - weight on the left (Y = W·X, W [M, K], X [..., K, N]): the vectors are X's columns;
 *   gram = Σ over the leading (batch) dims of X·Xᵀ [K, K], count = columns.
 * - Conv (X [N, S, spatial…], W [T, S/g, k…]): gram = input-channel covariance per group,
 *   [g, S/g, S/g] (block j = channels j·S/g …), count = N·∏spatial (input positions).
 *   For kernels > 1 with (S/g)·∏k ≤ maxPatchDim also patchGram [g, D, D], D = (S/g)·∏k,
 *   over the im2col patches exactly as the conv sees them (strides, pads incl. auto_pad,
 *   dilations, zero padding), patch index c·∏k + kernel offset (the order of W[t, c, k…]
 *   flattened), patchCount = N·∏output spatial. So a group's conv is Y = W_g [T/g, D] · p.
 * Layers that read the same tensor the same way share one LayerStats object (read-only).
 */
import { attrInt } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Model } from '../graph/graph.js';
import type { LayerInfo } from '../graph/layers.js';
import type { GemmEngine } from '../linalg/engine.js';
import { encodeModel } from '../onnx/codec.js';
import { mapTensors } from '../onnx/file.js';
import { newNode, newValueInfo, type ModelProto, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { isExternal, tensorRawBytes, type ExternalBytes } from '../onnx/tensor.js';
import { readConvGeometry } from '../rewrite/conv-geometry.js';
import { isSkip } from '../rewrite/pass.js';
import { err, ok, type Result } from '../errors.js';
import { openFetcher, type TensorFetcher } from '../verify/intermediate.js';
import type { SessionOptions } from '../verify/session.js';
import { elementCount, toNumbers, type Feeds, type HostTensor } from '../verify/tensor.js';
import { accumulateConvChannelsOn, accumulatePairBlocksOn, accumulatePatchesOn, pairBlockWidth, unshiftPairSums, type PairSums } from './accumulate-engine.js';
import {
  accumulateCols, accumulateConvChannels, accumulatePatches, accumulateRows, channelBlocks, patchBlocks, patchDimOf, resolvePatchGeometry, rowBlocks,
  type ConvPlacement, type FloatData, type PatchGeometry, type SampleBlock,
} from './accumulate.js';
import { createJsGemmEngine } from '../linalg/engine.js';
import type { AnchorStats } from '../rewrite/pass.js';
import type { CalibSet } from './load.js';

export {
  accumulateCols, accumulateConvChannels, accumulatePatches, accumulateRows, patchDimOf, resolvePatchGeometry,
  type ConvPlacement, type FloatData, type PatchGeometry,
} from './accumulate.js';

/** Default memory budget of the tensors one run exposes. */
export const DEFAULT_MAX_BYTES_PER_RUN = 512 * 2 ** 20;
/** Patch statistics only for (S/g)·∏k up to this (a 4608² Float64 gram is 170 MB). */
export const DEFAULT_MAX_PATCH_DIM = 4608;

export interface LayerStats {
  kind: 'matrix' | 'conv';
  /** The tensor the statistics are over (the layer's data input). */
  input: string;
  /**
   * Σ x·xᵀ, row-major Float64, symmetric, not divided by `count`.
   * matrix: [dim, dim], dim = K (the weight's reduction dim).
   * conv: [groups, dim, dim], dim = S/g; block j covers input channels j·dim … j·dim+dim−1.
   */
  gram: Float64Array;
  dim: number;
  /** 1 for matrix layers; the conv's group count. */
  groups: number;
  /** Vectors summed into gram: rows or columns (matrix), batch × input positions (conv). */
  count: number;
  /** Σ x / count, [groups·dim]. */
  mean: Float64Array;
  /** Conv only, when the kernel is > 1 and patchDim ≤ maxPatchDim: Σ p·pᵀ per group, [groups, patchDim, patchDim]. */
  patchGram?: Float64Array;
  /** (S/g)·∏k; patch index c·∏k + kernel offset (row-major over the kernel axes). */
  patchDim?: number;
  /** Patches summed into patchGram per group: batch × output positions. */
  patchCount?: number;
  /** Σ p / patchCount, [groups·patchDim]. */
  patchMean?: Float64Array;
  /** collectAnchoredStats: the same sums over the partly compressed model's input x̂, and Σ x̂·xᵀ. */
  anchor?: AnchorStats;
}

export interface CalibStats {
  /** By layer name (LayerInfo.name). */
  stats: Map<string, LayerStats>;
  /** Layer name → why it has no statistics. */
  unavailable: Map<string, string>;
  /** Passes over the calibration data (one ORT session each), without the shape probe. */
  passes: number;
  /** Model runs, the shape probe included. */
  runs: number;
  /** Calibration samples seen per pass. */
  samples: number;
}

export interface StatsOptions {
  /** Budget for the tensors one run exposes (default 512 MiB); above it, layers are split into passes. */
  maxBytesPerRun?: number;
  /** Largest patch vector for patch statistics (default 4608; 0 = none). */
  maxPatchDim?: number;
  /** Payloads of external tensors (they are inlined into the in-memory copy ORT loads). */
  external?: ExternalBytes;
  /** ORT options (default graphOptimizationLevel 'disabled', 1 thread). */
  session?: Pick<SessionOptions, 'graphOptimizationLevel' | 'intraOpNumThreads'>;
  /** Called after each run: runs done and the total (probe included). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Where conv Gram products run (e.g. createOrtGemmEngine()): ORT's GEMM makes patch
   * statistics of high-resolution convs affordable. Default: the exact fp64 JS kernels.
   */
  engine?: GemmEngine;
}

// ---------------------------------------------------------------------------- planning

/** How a layer's input is read. */
export type StatSpec =
  | { kind: 'rows'; tensor: string; k: number }
  | { kind: 'cols'; tensor: string; k: number }
  | { kind: 'conv'; tensor: string; conv: ConvPlacement; patches: boolean; output: string };

const specKey = (s: StatSpec): string =>
  s.kind === 'conv'
    ? `conv|${s.tensor}|${JSON.stringify([s.conv, s.patches])}`
    : `${s.kind}|${s.tensor}|${s.k}`;

/** What statistic a layer needs, or why it cannot have one. Pure: reads only the node and its weight's shape. */
export function planLayer(model: Model, layer: LayerInfo, maxPatchDim = DEFAULT_MAX_PATCH_DIM): StatSpec | string {
  if (layer.graph !== model.root) {
    return 'inside a subgraph (If/Loop/Scan body): its input cannot be exposed as a graph output';
  }
  const n = layer.node;
  const w = layer.weightShape;
  const xIndex = layer.op === 'Conv' ? 0 : layer.weightInput === 1 ? 0 : 1;
  const tensor = n.input[xIndex];
  if (!tensor) return `the ${layer.op} has no data input`;
  if (resolveConstant(model.root, tensor)) return 'both operands are constants';
  switch (layer.op) {
    case 'MatMul':
      if (w.length !== 2) return `weight of rank ${w.length}`;
      return layer.weightInput === 1 ? { kind: 'rows', tensor, k: w[0]! } : { kind: 'cols', tensor, k: w[1]! };
    case 'Gemm': {
      if (w.length !== 2) return `weight of rank ${w.length}`;
      const transA = attrInt(n, 'transA', 0) !== 0;
      const transB = attrInt(n, 'transB', 0) !== 0;
      if (layer.weightInput === 1) {
        // Y = op(A)·op(B), op(B) = W [K, N]: X = A is [M, K], or [K, M] with transA.
        const k = transB ? w[1]! : w[0]!;
        return transA ? { kind: 'cols', tensor, k } : { kind: 'rows', tensor, k };
      }
      // The mirror case: op(A) = W [M, K] constant, X = B is [K, N], or [N, K] with transB.
      const k = transA ? w[0]! : w[1]!;
      return transB ? { kind: 'rows', tensor, k } : { kind: 'cols', tensor, k };
    }
    case 'Conv': {
      const geo = readConvGeometry(n, w);
      if (isSkip(geo)) return geo.skip;
      const conv: ConvPlacement = {
        kernel: geo.kernel, strides: geo.strides, dilations: geo.dilations, pads: geo.pads, autoPad: geo.autoPad, S: geo.S, group: geo.group,
      };
      const patches = geo.kernelSize > 1 && maxPatchDim > 0 && patchDimOf({ channels: geo.S, groups: geo.group, kernel: geo.kernel }) <= maxPatchDim;
      return { kind: 'conv', tensor, conv, patches, output: n.output[0] ?? '' };
    }
    case 'ConvTranspose': return 'input statistics of ConvTranspose are not collected';
    case 'Gather': return 'Gather reads indices, not activations';
    default: return `${layer.op} is not a supported layer`;
  }
}

// ---------------------------------------------------------------------------- accumulators

interface Acc {
  spec: StatSpec;
  stats: LayerStats;
  sum: Float64Array;
  patchSum?: Float64Array;
  /** Set when the layer's tensor turns out not to fit; the layers become unavailable. */
  failed?: string;
  geoCache: Map<string, PatchGeometry | string>;
}

function newAcc(spec: StatSpec): Acc {
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
    const d = patchDimOf({ channels: spec.conv.S, groups: g, kernel: spec.conv.kernel });
    stats.patchGram = new Float64Array(g * d * d);
    stats.patchDim = d;
    stats.patchCount = 0;
    stats.patchMean = new Float64Array(g * d);
    acc.patchSum = new Float64Array(g * d);
  }
  return acc;
}

function floatData(t: HostTensor): FloatData | undefined {
  if (t.type === 'float32' || t.type === 'float64') return t.data as FloatData;
  if (t.type === 'float16') return toNumbers(t);
  return undefined;
}

/** Folds one fetched tensor into an accumulator; returns a reason when it does not fit the layer. */
async function accumulate(acc: Acc, t: HostTensor, engine: GemmEngine | undefined): Promise<string | undefined> {
  const x = floatData(t);
  if (!x) return `its input is ${t.type}, not a float tensor`;
  const dims = t.dims;
  const st = acc.stats;
  const spec = acc.spec;
  switch (spec.kind) {
    case 'rows': {
      const k = spec.k;
      if (dims.length < 1 || dims[dims.length - 1] !== k) return `input dims [${dims.join(', ')}] do not end in K = ${k}`;
      st.count += accumulateRows(st.gram, x, elementCount(dims) / k, k, acc.sum);
      return undefined;
    }
    case 'cols': {
      const k = spec.k;
      if (dims.length === 1) {
        if (dims[0] !== k) return `input dims [${dims.join(', ')}] are not [K = ${k}]`;
        st.count += accumulateCols(st.gram, x, k, 1, acc.sum);
        return undefined;
      }
      if (dims.length < 2 || dims[dims.length - 2] !== k) return `input dims [${dims.join(', ')}] do not have K = ${k} second to last`;
      const cols = dims[dims.length - 1]!;
      const batch = elementCount(dims.slice(0, -2));
      for (let b = 0; b < batch; b++) st.count += accumulateCols(st.gram, x, k, cols, acc.sum, b * k * cols);
      return undefined;
    }
    case 'conv': {
      const key = dims.join('x');
      let geo = acc.geoCache.get(key);
      if (!geo) { geo = resolvePatchGeometry(spec.conv, dims); acc.geoCache.set(key, geo); }
      if (typeof geo === 'string') return geo;
      const positions = elementCount(geo.inSpatial);
      if (engine) {
        st.count += await accumulateConvChannelsOn(engine, st.gram, x, geo.batch, geo.channels, positions, geo.groups, acc.sum);
        if (st.patchGram) st.patchCount! += await accumulatePatchesOn(engine, st.patchGram, x, geo, acc.patchSum);
      } else {
        st.count += accumulateConvChannels(st.gram, x, geo.batch, geo.channels, positions, geo.groups, acc.sum);
        if (st.patchGram) st.patchCount! += accumulatePatches(st.patchGram, x, geo, acc.patchSum);
      }
      return undefined;
    }
  }
}

function allFinite(a: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return false;
  return true;
}

function finish(acc: Acc): string | undefined {
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

// ---------------------------------------------------------------------------- model copies

function inlined(t: TensorProto, ext: ExternalBytes): TensorProto {
  const c: TensorProto = { ...t, externalData: [], rawData: tensorRawBytes(t, ext) };
  delete c.dataLocation;
  return c;
}

/** A copy of the model (sharing tensors) whose graph also outputs `names`, after `extraNodes`. */
function withOutputs(model: ModelProto, names: readonly string[], extraNodes: readonly NodeProto[], ext: ExternalBytes | undefined): Uint8Array {
  const g = model.graph!;
  const have = new Set(g.output.map((o) => o.name));
  const extra = names.filter((n) => !have.has(n)).map((name) => newValueInfo({ name }));
  let copy: ModelProto = { ...model, graph: { ...g, node: [...g.node, ...extraNodes], output: [...g.output, ...extra] } };
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
async function probeShapes(
  model: Model, proto: ModelProto, accs: Iterable<Acc>, probeFeed: Feeds, external: ExternalBytes | undefined, sessionOpts: SessionOptions,
): Promise<Result<{ sizes: Map<string, number[]>; runs: number }>> {
  const inputNames = new Set(Object.keys(probeFeed));
  const list = [...accs];
  let runs = 0;
  const sizes = new Map<string, number[]>(Object.entries(probeFeed).map(([n, t]) => [n, [...t.dims]]));
  const probed = [...new Set(list.flatMap((a) => [a.spec.tensor, ...(a.spec.kind === 'conv' && a.spec.output ? [a.spec.output] : [])]))]
    .filter((t) => !inputNames.has(t));
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
    const geo = resolvePatchGeometry(spec.conv, inDims);
    if (typeof geo === 'string') acc.failed = geo;
    else if (outDims.length !== inDims.length || !geo.outSpatial.every((d, i) => d === outDims[i + 2])) {
      acc.failed = `ORT's output dims [${outDims.join(', ')}] differ from the computed spatial dims [${geo.outSpatial.join(', ')}]`;
    }
  }
  return ok({ sizes, runs });
}

// ---------------------------------------------------------------------------- driver

/**
 * Collects the input statistics of `layers` (from findLayers(model)) over `calib`.
 * Fails only when the model cannot run on the calibration feeds; layer-level problems
 * land in `unavailable`.
 */
export async function collectStats(model: Model, layers: readonly LayerInfo[], calib: CalibSet, opts: StatsOptions = {}): Promise<Result<CalibStats>> {
  const budget = opts.maxBytesPerRun ?? DEFAULT_MAX_BYTES_PER_RUN;
  if (!(budget > 0)) return err('usage', `maxBytesPerRun must be positive, got ${budget}`);
  const sessionOpts: SessionOptions = { graphOptimizationLevel: 'disabled', ...opts.session, label: 'calibration copy of the model' };
  const proto = model.proto;

  const { unavailable, accs, layerAcc } = planAccumulators(model, layers, opts.maxPatchDim ?? DEFAULT_MAX_PATCH_DIM, newAcc);
  const probeFeed = largestFeed(calib.feeds());
  if (!probeFeed) return err('usage', 'the calibration set has no feeds');
  const inputNames = new Set(Object.keys(probeFeed));

  const pr = await probeShapes(model, proto, accs.values(), probeFeed, opts.external, sessionOpts);
  if (!pr.ok) return pr;
  let runs = pr.value.runs;
  const sizes = pr.value.sizes;
  // Passes: tensors that are model inputs come from the feeds (first pass); the others
  // are exposed as graph outputs, grouped under the budget.
  const byTensor = new Map<string, Acc[]>();
  for (const a of accs.values()) {
    if (a.failed) continue;
    const list = byTensor.get(a.spec.tensor);
    if (list) list.push(a); else byTensor.set(a.spec.tensor, [a]);
  }
  const fromFeed = [...byTensor.keys()].filter((t) => inputNames.has(t));
  const estimate = [...byTensor.keys()].filter((t) => !inputNames.has(t)).map((name) => ({ name, bytes: 4 * elementCount(sizes.get(name) ?? [0]) }));
  const groups = groupByBudget(estimate, budget);
  if (groups.length === 0 && fromFeed.length > 0) groups.push([]);

  const total = runs + groups.length * calib.batches;
  opts.onProgress?.(runs, total);
  for (let gi = 0; gi < groups.length; gi++) {
    const group = groups[gi]!;
    const direct = gi === 0 ? fromFeed : [];
    let fetcher: TensorFetcher | undefined;
    if (group.length > 0) {
      const f = await openFetcher({ bytes: withOutputs(proto, group, [], opts.external) }, group, sessionOpts);
      if (!f.ok) return f;
      fetcher = f.value;
    }
    try {
      for (const feed of calib.feeds()) {
        let got: Record<string, HostTensor> = {};
        if (fetcher) {
          const r = await fetcher.run(feed);
          if (!r.ok) return r;
          got = r.value;
        }
        for (const t of direct) got[t] = feed[t]!;
        for (const [t, value] of Object.entries(got)) {
          for (const acc of byTensor.get(t) ?? []) {
            if (acc.failed) continue;
            const why = await accumulate(acc, value, opts.engine);
            if (why) acc.failed = why;
          }
        }
        runs++;
        opts.onProgress?.(runs, total);
      }
    } finally {
      await fetcher?.release();
    }
  }

  const stats = finishLayers(layers, (name) => layerAcc.get(name), (acc) => acc.failed ?? finish(acc), (acc) => acc.stats, unavailable);
  return ok({ stats, unavailable, passes: groups.length, runs, samples: calib.samples });
}

/**
 * One accumulator per distinct statistic (layers that read the same tensor the same way
 * share one), and why each layer that gets none has none.
 */
function planAccumulators<A>(model: Model, layers: readonly LayerInfo[], maxPatchDim: number, make: (spec: StatSpec) => A):
  { unavailable: Map<string, string>; accs: Map<string, A>; layerAcc: Map<string, A> } {
  const unavailable = new Map<string, string>();
  const accs = new Map<string, A>();
  const layerAcc = new Map<string, A>();
  for (const layer of layers) {
    const spec = planLayer(model, layer, maxPatchDim);
    if (typeof spec === 'string') { unavailable.set(layer.name, spec); continue; }
    const key = specKey(spec);
    let acc = accs.get(key);
    if (acc === undefined) { acc = make(spec); accs.set(key, acc); }
    layerAcc.set(layer.name, acc);
  }
  return { unavailable, accs, layerAcc };
}

/** The largest feed: the one a run's byte budget must hold. */
function largestFeed(feeds: Iterable<Feeds>): Feeds | undefined {
  let best: Feeds | undefined;
  for (const f of feeds) if (!best || feedElements(f) > feedElements(best)) best = f;
  return best;
}

/**
 * Finishes each layer's accumulator once (layers reading the same tensor share one) and
 * sorts the layers: statistics for those that finished, the reason into `unavailable`
 * for the others.
 */
function finishLayers<A>(
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

// ---------------------------------------------------------------------------- anchored

/** What collectAnchoredStats reads the feeds from (a CalibSet, or feeds in memory). */
export interface FeedSource {
  /** The feeds in a fixed order; every call starts over. */
  feeds(): Iterable<Feeds>;
  /** Feeds per pass. */
  readonly batches: number;
}

export interface AnchoredStatsOptions extends StatsOptions {
  /**
   * Tensors whose values are the same in both models (no compressed layer upstream): the
   * original's run serves both, so x̂ = x and Σ x̂·xᵀ = Σ x·xᵀ without another run.
   */
  unchanged?: ReadonlySet<string> | 'all';
}

/** Paired sums of one statistic (beside the original's Acc). */
interface PairAcc { acc: Acc; pair: PairSums; patch?: PairSums; count: number; patchCount: number; same?: boolean }

/**
 * Paired statistics for anchored fitting: for each layer, what collectStats measures on
 * `original` (x) and, on the same feeds, the same sums over the layer's input x̂ in
 * `current` (the model with earlier layers already compressed) with the cross term
 * Σ x̂·xᵀ (and the patch versions), in LayerStats.anchor. The layers are those of `current`
 * (their input tensors must exist under the same names in `original`). Both models run on
 * every feed; tensors in `unchanged` come from the original's run alone. Memory: the
 * exposed tensors of both models stay within maxBytesPerRun per pass, as in collectStats.
 */
export async function collectAnchoredStats(
  original: Model, current: Model, layers: readonly LayerInfo[], calib: FeedSource, opts: AnchoredStatsOptions = {},
): Promise<Result<CalibStats>> {
  const budget = opts.maxBytesPerRun ?? DEFAULT_MAX_BYTES_PER_RUN;
  if (!(budget > 0)) return err('usage', `maxBytesPerRun must be positive, got ${budget}`);
  const sessionOpts: SessionOptions = { graphOptimizationLevel: 'disabled', ...opts.session, label: 'calibration copy of the model' };
  const unchangedSet = opts.unchanged;
  const unchanged = { has: (t: string): boolean => unchangedSet === 'all' || (unchangedSet?.has(t) ?? false) };
  const engine = opts.engine ?? createJsGemmEngine();

  const { unavailable, accs, layerAcc } = planAccumulators(current, layers, opts.maxPatchDim ?? DEFAULT_MAX_PATCH_DIM, newPairAcc);

  const probeFeed = largestFeed(calib.feeds());
  if (!probeFeed) return err('usage', 'the calibration set has no feeds');
  const inputNames = new Set(Object.keys(probeFeed));
  const pr = await probeShapes(original, original.proto, [...accs.values()].map((p) => p.acc), probeFeed, opts.external, sessionOpts);
  if (!pr.ok) return pr;
  let runs = pr.value.runs;
  const sizes = pr.value.sizes;

  const byTensor = new Map<string, PairAcc[]>();
  for (const p of accs.values()) {
    if (p.acc.failed) continue;
    const list = byTensor.get(p.acc.spec.tensor);
    if (list) list.push(p); else byTensor.set(p.acc.spec.tensor, [p]);
  }
  // Model inputs are the same in both models; the others are exposed (in both models unless unchanged).
  const fromFeed = [...byTensor.keys()].filter((t) => inputNames.has(t));
  const estimate = [...byTensor.keys()].filter((t) => !inputNames.has(t))
    .map((name) => ({ name, bytes: (unchanged.has(name) ? 4 : 8) * elementCount(sizes.get(name) ?? [0]) }));
  const groups = groupByBudget(estimate, budget);
  if (groups.length === 0 && fromFeed.length > 0) groups.push([]);

  const perGroup = groups.map((g) => (g.some((t) => !unchanged.has(t)) ? 2 : 1));
  const total = runs + perGroup.reduce((a, b) => a + b * calib.batches, 0);
  opts.onProgress?.(runs, total);
  for (let gi = 0; gi < groups.length; gi++) {
    const group = groups[gi]!;
    const changed = group.filter((t) => !unchanged.has(t));
    const direct = gi === 0 ? fromFeed : [];
    let fOrig: TensorFetcher | undefined;
    let fCur: TensorFetcher | undefined;
    try {
      if (group.length > 0) {
        const f = await openFetcher({ bytes: withOutputs(original.proto, group, [], opts.external) }, group, sessionOpts);
        if (!f.ok) return f;
        fOrig = f.value;
      }
      if (changed.length > 0) {
        const f = await openFetcher({ bytes: withOutputs(current.proto, changed, [], opts.external) }, changed, { ...sessionOpts, label: 'calibration copy of the partly compressed model' });
        if (!f.ok) return f;
        fCur = f.value;
      }
      for (const feed of calib.feeds()) {
        let got: Record<string, HostTensor> = {};
        let hat: Record<string, HostTensor> = {};
        if (fOrig) {
          const r = await fOrig.run(feed);
          if (!r.ok) return r;
          got = r.value;
          runs++;
        }
        if (fCur) {
          const r = await fCur.run(feed);
          if (!r.ok) return r;
          hat = r.value;
          runs++;
        }
        for (const t of direct) got[t] = feed[t]!;
        for (const [t, value] of Object.entries(got)) {
          for (const p of byTensor.get(t) ?? []) {
            if (p.acc.failed) continue;
            const why = await accumulatePair(p, value, hat[t] ?? (unchanged.has(t) || inputNames.has(t) ? undefined : null), engine);
            if (why) p.acc.failed = why;
          }
        }
        opts.onProgress?.(runs, total);
      }
    } finally {
      await fOrig?.release();
      await fCur?.release();
    }
  }

  const stats = finishLayers(layers, (name) => layerAcc.get(name), (p) => p.acc.failed ?? finishPair(p), (p) => p.acc.stats, unavailable);
  if (!opts.engine) await engine.dispose();
  return ok({ stats, unavailable, passes: groups.length, runs, samples: 0 });
}

/** The accumulator of paired statistics (original and compressed model) for one spec. */
function newPairAcc(spec: StatSpec): PairAcc {
  const acc = newAcc(spec);
  const st = acc.stats;
  const g = st.groups;
  const d = st.dim;
  // Shifted sums (accumulate-engine.ts): the fits remove the means, fp32 products would lose them.
  const pair: PairSums = {
    gram: st.gram, gramHat: new Float64Array(g * d * d), cross: new Float64Array(g * d * d), sum: acc.sum, sumHat: new Float64Array(g * d),
    shift: new Float64Array(g * d), shiftHat: new Float64Array(g * d),
  };
  const D = st.patchDim;
  const patch: PairSums | undefined = st.patchGram && D
    ? {
      gram: st.patchGram, gramHat: new Float64Array(g * D * D), cross: new Float64Array(g * D * D), sum: acc.patchSum, sumHat: new Float64Array(g * D),
      shift: new Float64Array(g * D), shiftHat: new Float64Array(g * D),
    }
    : undefined;
  return { acc, pair, patch, count: 0, patchCount: 0 };
}

/** The block streams of one tensor as a layer reads it, or why it does not fit. */
function blockStreams(p: PairAcc, t: HostTensor, x: FloatData): { vec: Generator<SampleBlock, void, void>[]; patch?: Generator<SampleBlock, void, void>; count: number; patchCount: number } | string {
  const dims = t.dims;
  const spec = p.acc.spec;
  switch (spec.kind) {
    case 'rows': {
      const k = spec.k;
      if (dims.length < 1 || dims[dims.length - 1] !== k) return `input dims [${dims.join(', ')}] do not end in K = ${k}`;
      const rows = elementCount(dims) / k;
      return { vec: [rowBlocks(x, rows, k, pairBlockWidth(k))], count: rows, patchCount: 0 };
    }
    case 'cols': {
      const k = spec.k;
      if (dims.length === 1) {
        if (dims[0] !== k) return `input dims [${dims.join(', ')}] are not [K = ${k}]`;
        return { vec: [channelBlocks(x, 1, k, 1, 1, 1)], count: 1, patchCount: 0 };
      }
      if (dims.length < 2 || dims[dims.length - 2] !== k) return `input dims [${dims.join(', ')}] do not have K = ${k} second to last`;
      const cols = dims[dims.length - 1]!;
      const batch = elementCount(dims.slice(0, -2));
      return { vec: [channelBlocks(x, batch, k, cols, 1, pairBlockWidth(k))], count: batch * cols, patchCount: 0 };
    }
    case 'conv': {
      const key = dims.join('x');
      let geo = p.acc.geoCache.get(key);
      if (!geo) { geo = resolvePatchGeometry(spec.conv, dims); p.acc.geoCache.set(key, geo); }
      if (typeof geo === 'string') return geo;
      const positions = elementCount(geo.inSpatial);
      const s = geo.channels / geo.groups;
      return {
        vec: [channelBlocks(x, geo.batch, geo.channels, positions, geo.groups, pairBlockWidth(s))],
        patch: p.patch ? patchBlocks(x, geo, pairBlockWidth(patchDimOf(geo))) : undefined,
        count: geo.batch * positions,
        patchCount: geo.batch * elementCount(geo.outSpatial),
      };
    }
  }
}

/**
 * Folds one feed's x (and x̂) into paired sums. `that` undefined: x̂ = x (nothing
 * compressed upstream); null: x̂ was expected but not fetched.
 */
async function accumulatePair(p: PairAcc, t: HostTensor, that: HostTensor | undefined | null, engine: GemmEngine): Promise<string | undefined> {
  if (that === null) return 'its input was not fetched from the partly compressed model';
  const x = floatData(t);
  if (!x) return `its input is ${t.type}, not a float tensor`;
  const xh = that ? floatData(that) : x;
  if (!xh) return `its input in the partly compressed model is ${that!.type}, not a float tensor`;
  if (that && (that.dims.length !== t.dims.length || that.dims.some((d, i) => d !== t.dims[i]))) {
    return `its input has dims [${that.dims.join(', ')}] in the partly compressed model, [${t.dims.join(', ')}] in the original`;
  }
  const a = blockStreams(p, t, x);
  if (typeof a === 'string') return a;
  const st = p.acc.stats;
  if (p.same !== undefined && p.same !== !that) return 'its input was fetched from the partly compressed model for some feeds only';
  p.same = !that;
  if (!that) {
    await accumulatePairBlocksOn(engine, p.pair, st.dim, a.vec[0]!, 'same');
    if (p.patch && a.patch) await accumulatePairBlocksOn(engine, p.patch, st.patchDim!, a.patch, 'same');
  } else {
    const b = blockStreams(p, that, xh);
    if (typeof b === 'string') return b;
    await accumulatePairBlocksOn(engine, p.pair, st.dim, a.vec[0]!, b.vec[0]!);
    if (p.patch && a.patch && b.patch) await accumulatePairBlocksOn(engine, p.patch, st.patchDim!, a.patch, b.patch);
  }
  p.count += a.count;
  p.patchCount += a.patchCount;
  return undefined;
}

/** Means and the anchor of a paired accumulator; a reason when its sums are not usable. */
function finishPair(p: PairAcc): string | undefined {
  const st = p.acc.stats;
  st.count = p.count;
  if (st.patchGram) st.patchCount = p.patchCount;
  unshiftPairSums(p.pair, st.dim, st.groups, p.count, p.same);
  if (p.patch) unshiftPairSums(p.patch, st.patchDim!, st.groups, p.patchCount, p.same);
  const why = finish(p.acc);
  if (why) return why;
  if (p.same) {
    // x̂ = x: the anchor is the original's statistics (shared arrays, read-only).
    st.anchor = { gram: st.gram, cross: st.gram, mean: st.mean };
    if (st.patchGram) Object.assign(st.anchor, { patchGram: st.patchGram, patchCross: st.patchGram, patchMean: st.patchMean });
    return undefined;
  }
  const d = st.dim;
  for (let g = 0; g < st.groups; g++) {
    for (let j = 0; j < d; j++) if (!Number.isFinite(p.pair.gramHat[g * d * d + j * d + j]!)) return 'its input activations in the partly compressed model have NaN or Inf';
  }
  const meanOf = (sum: Float64Array | undefined, n: number): Float64Array => Float64Array.from(sum ?? [], (v) => v / Math.max(1, n));
  if (!allFinite(p.pair.sumHat!) || !allFinite(p.pair.cross)) return 'its input activations in the partly compressed model have NaN or Inf';
  st.anchor = { gram: p.pair.gramHat, cross: p.pair.cross, mean: meanOf(p.pair.sumHat, st.count) };
  if (p.patch && st.patchGram) {
    if (!allFinite(p.patch.sumHat!) || !allFinite(p.patch.cross)) return 'its input activations in the partly compressed model have NaN or Inf';
    st.anchor.patchGram = p.patch.gramHat;
    st.anchor.patchCross = p.patch.cross;
    st.anchor.patchMean = meanOf(p.patch.sumHat, st.patchCount!);
  }
  return undefined;
}

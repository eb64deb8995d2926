/**
 * What input statistic each layer needs (calib/stats.ts tells the statistics themselves):
 * the result types, and the plan that maps layers to accumulators (layers that read the
 * same tensor the same way share one). A Gather's statistic is the lookup counts of its
 * indices (planIndex), planned apart so anchored (paired) statistics keep to second
 * moments; a batched MatMul weight's is one Gram per slice (planSlices), planned apart
 * for the same reason. Pure: reads only nodes and weight shapes.
 */
import { attrInt } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Model } from '../graph/graph.js';
import type { LayerInfo } from '../graph/layers.js';
import type { GemmEngine } from '../linalg/engine.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { readConvGeometry } from '../rewrite/conv-geometry.js';
import { readConvTransposeGeometry, type ConvTransposeGeometry } from '../rewrite/convtranspose-geometry.js';
import { isSkip, type AnchorStats } from '../rewrite/pass.js';
import type { SessionOptions } from '../verify/session.js';
import { patchDimOf, type ConvPlacement } from './patch-geometry.js';

/** Default memory budget of the tensors one run exposes. */
export const DEFAULT_MAX_BYTES_PER_RUN = 512 * 2 ** 20;
/** Patch statistics only for (S/g)·∏k up to this (a 4608² Float64 gram is 170 MB). */
export const DEFAULT_MAX_PATCH_DIM = 4608;
/**
 * Patches a layer's patch statistics read per calibration tensor (samplePairs): a
 * 512×512 feature map has 262k, and each costs patchDim² products (1152² for 128 channels
 * at 3×3); 65536 keeps every pair of maps up to 256×256 and estimates the rest from a
 * stratified sample, at ≥ 14 patches per dimension per input for the largest patchDim.
 */
export const DEFAULT_MAX_PATCHES = 65536;

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
  /**
   * 1 for matrix layers; the conv's group count; for a batched MatMul weight [B…, K, N]
   * the slices ∏B… (gram [slices, K, K], mean [slices·K], count per slice: planSlices).
   */
  groups: number;
  /** Vectors summed into gram: rows or columns (matrix, per slice when batched), batch × input positions (conv). */
  count: number;
  /** Σ x / count, [groups·dim]. */
  mean: Float64Array;
  /**
   * Conv and ConvTranspose only, when the kernel is > 1 and patchDim ≤ maxPatchDim: Σ p·pᵀ
   * per group, [groups, patchDim, patchDim] (a ConvTranspose's p: its scatter patches,
   * rewrite/convtranspose-patches.ts, one per output position).
   */
  patchGram?: Float64Array;
  /** (S/g)·∏k; patch index c·∏k + kernel offset (row-major over the kernel axes). */
  patchDim?: number;
  /** Patches summed into patchGram per group: batch × output positions, or the sample of them (maxPatches; a ConvTranspose's output positions are sampled alike). */
  patchCount?: number;
  /** Patches the layer's inputs had (batch × output positions); more than patchCount when sampled. */
  patchTotal?: number;
  /** Σ p / patchCount, [groups·patchDim]. */
  patchMean?: Float64Array;
  /** collectAnchoredStats: the same sums over the partly compressed model's input x̂, and Σ x̂·xᵀ. */
  anchor?: AnchorStats;
  /** A Gather's lookups of each row of its table [V] ('index' statistics: gram and mean empty, dim = V, count = lookups in range). */
  rowCounts?: Float64Array;
  /** Lookups outside [−V, V) in the calibration indices: not in rowCounts. */
  indexOutOfRange?: number;
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
  /** Patches read per layer and calibration tensor (default DEFAULT_MAX_PATCHES; Infinity = all). */
  maxPatches?: number;
  /** Payloads of external tensors (they are inlined into the in-memory copy ORT loads). */
  external?: ExternalBytes;
  /** ORT options (default graphOptimizationLevel 'disabled', 1 thread). */
  session?: Pick<SessionOptions, 'graphOptimizationLevel' | 'intraOpNumThreads' | 'spinning'>;
  /** Called after each run: runs done and the total (probe included). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Where conv Gram products run (e.g. createOrtGemmEngine()): ORT's GEMM makes patch
   * statistics of high-resolution convs affordable. Default: the exact fp64 JS kernels.
   */
  engine?: GemmEngine;
  /**
   * Tensor dims already learned (graph/shapes.ts, inputs included). When the calibration
   * inputs have the dims they were learned at, they stand for the probe run (one run of
   * the model up to the layers, per call: per anchored wave).
   */
  knownShapes?: ReadonlyMap<string, readonly number[]>;
}

// ---------------------------------------------------------------------------- planning

/** How a layer's input is read. */
export type StatSpec =
  | { kind: 'rows'; tensor: string; k: number }
  | { kind: 'cols'; tensor: string; k: number }
  | {
    kind: 'conv'; tensor: string; conv: ConvPlacement; patches: boolean; output: string;
    /** A ConvTranspose's geometry when its patch statistics are its scatter patches (`conv` then places the channel Gram as a 1x1). */
    scatter?: ConvTransposeGeometry;
  };

/**
 * How a batched MatMul weight's data operand is read: rows of K (weight on the right) or
 * columns (on the left), each into the Gram of the weight slice broadcasting pairs it with.
 */
export interface SliceSpec { kind: 'slices'; side: 'rows' | 'cols'; tensor: string; k: number; batch: number[] }

/** How a Gather's lookups are read: the indices tensor, counted against its table's V rows. */
export interface IndexSpec { kind: 'index'; tensor: string; rows: number }

export const specKey = (s: StatSpec): string =>
  s.kind === 'conv'
    ? `conv|${s.tensor}|${JSON.stringify([s.conv, s.patches, s.scatter ?? null])}`
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
      // Batched weights have per-slice Grams (planSlices), which paired statistics do not collect.
      if (w.length > 2) return `batched weight [${w.join(', ')}]: its statistics are per slice, not paired with the compressed model's`;
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
    case 'ConvTranspose': {
      // The input-side factor mixes X's channels at each input position, as a 1x1 conv on X
      // would: its statistic is X's channel Gram per group, over all of X's positions.
      const S = w[0]!;
      const group = attrInt(n, 'group', 1);
      const spatial = w.length - 2;
      if (spatial < 1 || !Number.isInteger(group) || group < 1 || S % group !== 0) return `ConvTranspose weight [${w.join(', ')}] does not fit group ${group}`;
      const ones = new Array<number>(spatial).fill(1);
      const conv: ConvPlacement = { kernel: ones, strides: ones, dilations: ones, pads: new Array<number>(2 * spatial).fill(0), autoPad: 'NOTSET', S, group };
      // The output side sees scatter patches (rewrite/convtranspose-patches.ts), gathered as a
      // Conv's im2col patches are, under the same kernel and patchDim conditions. An
      // attribute the geometry reader refuses leaves the channel Gram alone, as before.
      const ct = readConvTransposeGeometry(n, w);
      const patches = !isSkip(ct) && ct.kernelSize > 1 && maxPatchDim > 0 && patchDimOf({ channels: S, groups: group, kernel: ct.kernel }) <= maxPatchDim;
      // With scatter patches the probe checks their output extent against ORT's (stats-runs.ts);
      // without, there is no output to check: the scatter's extent is not the 1x1 placement's.
      return patches && !isSkip(ct)
        ? { kind: 'conv', tensor, conv, patches: true, output: n.output[0] ?? '', scatter: ct }
        : { kind: 'conv', tensor, conv, patches: false, output: '' };
    }
    // Its statistic is the lookup counts of its indices (planIndex), not a second moment.
    case 'Gather': return 'a Gather reads indices, not activations: its statistics are the lookup counts of its indices';
    // X [seq, batch, I] (layout 1: [batch, seq, I]) meets W [dirs, G·H, I] as X·Wᵀ: rows of I.
    case 'LSTM': case 'GRU': case 'RNN': return w.length === 3 ? { kind: 'rows', tensor, k: w[2]! } : `weight of rank ${w.length}`;
    default: return `${layer.op} is not a supported layer`;
  }
}

/**
 * One accumulator per distinct statistic (layers that read the same tensor the same way
 * share one), and why each layer that gets none has none.
 */
export function planAccumulators<A>(model: Model, layers: readonly LayerInfo[], maxPatchDim: number, make: (spec: StatSpec) => A):
  { unavailable: Map<string, string>; accs: Map<string, A>; layerAcc: Map<string, A> } {
  return planBy(layers, (l) => planLayer(model, l, maxPatchDim), specKey, make);
}

function planBy<S, A>(layers: readonly LayerInfo[], plan: (layer: LayerInfo) => S | string, key: (s: S) => string, make: (spec: S) => A):
  { unavailable: Map<string, string>; accs: Map<string, A>; layerAcc: Map<string, A> } {
  const unavailable = new Map<string, string>();
  const accs = new Map<string, A>();
  const layerAcc = new Map<string, A>();
  for (const layer of layers) {
    const spec = plan(layer);
    if (typeof spec === 'string') { unavailable.set(layer.name, spec); continue; }
    const k = key(spec);
    let acc = accs.get(k);
    if (acc === undefined) { acc = make(spec); accs.set(k, acc); }
    layerAcc.set(layer.name, acc);
  }
  return { unavailable, accs, layerAcc };
}

/**
 * The lookup counts a row Gather on a constant table [V, D] needs (passes/gather-svd.ts
 * weights the rows by them), or why it cannot have them. Pure, like planLayer.
 */
export function planIndex(model: Model, layer: LayerInfo): IndexSpec | string {
  if (layer.graph !== model.root) return 'inside a subgraph (If/Loop/Scan body): its indices cannot be exposed as a graph output';
  const n = layer.node;
  if (layer.op !== 'Gather' || layer.weightInput !== 0 || layer.weightShape.length !== 2) return 'not a Gather on a constant 2-D table';
  const axis = attrInt(n, 'axis', 0);
  if (axis !== 0 && axis !== -2) return `Gather along axis ${axis}: only row lookups (axis 0) have row counts`;
  const tensor = n.input[1];
  if (!tensor) return 'the Gather has no indices input';
  if (resolveConstant(model.root, tensor)) return 'its indices are a constant: every input looks up the same rows';
  return { kind: 'index', tensor, rows: layer.weightShape[0]! };
}

/** planAccumulators for Gathers' lookup counts: one accumulator per indices tensor and table size. */
export function planIndexAccumulators<A>(model: Model, layers: readonly LayerInfo[], make: (spec: IndexSpec) => A):
  { unavailable: Map<string, string>; accs: Map<string, A>; layerAcc: Map<string, A> } {
  return planBy(layers, (l) => planIndex(model, l), (s) => `index|${s.tensor}|${s.rows}`, make);
}

/** Largest total of per-slice Gram entries (Float64) one batched weight may collect: 256 MiB. */
export const MAX_SLICE_GRAM_VALUES = 32 * 2 ** 20;

/**
 * The per-slice statistics a MatMul with a constant batched weight [B…, K, N] (or
 * [B…, M, K] on the left) needs (passes/matmul-batched-svd.ts whitens each slice with its
 * own), or why it cannot have them. Pure, like planLayer.
 */
export function planSlices(model: Model, layer: LayerInfo): SliceSpec | string {
  if (layer.graph !== model.root) return 'inside a subgraph (If/Loop/Scan body): its input cannot be exposed as a graph output';
  const w = layer.weightShape;
  if (layer.op !== 'MatMul' || w.length < 3) return 'not a MatMul with a batched constant weight';
  const right = layer.weightInput === 1;
  const tensor = layer.node.input[right ? 0 : 1];
  if (!tensor) return 'the MatMul has no data input';
  if (resolveConstant(model.root, tensor)) return 'both operands are constants';
  const k = right ? w[w.length - 2]! : w[w.length - 1]!;
  const values = w.slice(0, -2).reduce((a, b) => a * b, 1) * k * k;
  if (values > MAX_SLICE_GRAM_VALUES) return `per-slice statistics would hold ${Math.round(values * 8 / 2 ** 20)} MiB of Gram matrices (at most ${MAX_SLICE_GRAM_VALUES * 8 / 2 ** 20} MiB): fitted weight-only`;
  return { kind: 'slices', side: right ? 'rows' : 'cols', tensor, k, batch: w.slice(0, -2) };
}

/** planAccumulators for batched weights: one accumulator per data tensor, side, K and batch dims. */
export function planSliceAccumulators<A>(model: Model, layers: readonly LayerInfo[], make: (spec: SliceSpec) => A):
  { unavailable: Map<string, string>; accs: Map<string, A>; layerAcc: Map<string, A> } {
  return planBy(layers, (l) => planSlices(model, l), (s) => `slices|${s.side}|${s.tensor}|${s.k}|${s.batch.join('x')}`, make);
}

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
 * - ConvTranspose (W [S, T/g, k…]): gram = X's input-channel Gram per group, as a 1x1
 *   conv on X would collect it (the input-side factor mixes X's channels per position).
 *   Under the same kernel and maxPatchDim conditions also patchGram over its scatter
 *   patches (rewrite/convtranspose-patches.ts: per output position, X at the input
 *   positions each tap writes there from), D = (S/g)·∏k in the Conv layout's order,
 *   patchCount = N·∏output spatial; sampled by output position (maxPatches) like a Conv's.
 * - Gather on a constant table E [V, D] (row lookups): its statistic is not a second
 *   moment but how often the calibration indices look up each row, rowCounts [V] (int32
 *   or int64 indices of any shape, negative ones from the end as Gather reads them);
 *   count = lookups in range, indexOutOfRange = the others (counted, not an error: the
 *   run that exposes the indices does not run the Gather). gram and mean are empty.
 * - MatMul with a constant batched weight W [B…, K, N] (or [B…, M, K] on the left): one
 *   Gram per slice, over the rows (columns) of the data operand's slices that
 *   broadcasting pairs with it (accumulate-slices.ts); groups = slices, gram
 *   [slices, K, K], mean [slices·K], count = vectors per slice.
 * Layers that read the same tensor the same way share one LayerStats object (read-only).
 * The planning is in stats-plan.ts, what plain and paired statistics share in
 * stats-runs.ts, the paired statistics of anchored fitting in anchored-stats.ts.
 */
import type { Model } from '../graph/graph.js';
import type { LayerInfo } from '../graph/layers.js';
import type { GemmEngine } from '../linalg/engine.js';
import { err, ok, type Result } from '../errors.js';
import { openFetcher, type TensorFetcher } from '../verify/intermediate.js';
import type { SessionOptions } from '../verify/session.js';
import { elementCount, type HostTensor } from '../verify/tensor.js';
import { accumulateConvChannelsOn, accumulatePatchesOn } from './accumulate-engine.js';
import { accumulateCols, accumulateConvChannels, accumulatePatches, accumulateRows } from './accumulate.js';
import { resolveInputGeometry } from './patch-geometry.js';
import { patchPairCount, samplePairs } from './sample-blocks.js';
import type { CalibSet } from './load.js';
import {
  DEFAULT_MAX_BYTES_PER_RUN, DEFAULT_MAX_PATCHES, DEFAULT_MAX_PATCH_DIM, planAccumulators, planIndexAccumulators, planSliceAccumulators, type CalibStats, type StatsOptions,
} from './stats-plan.js';
import {
  accumulateIndices, accumulateSliceAcc, finish, finishIndex, finishLayers, floatData, groupByBudget, isIndexAcc, isSliceAcc, largestFeed, newAcc, newIndexAcc,
  newSliceAcc, probeShapes, withOutputs, type Acc, type IndexAcc, type SliceAcc,
} from './stats-runs.js';

export { accumulateCols, accumulateConvChannels, accumulatePatches, accumulateRows } from './accumulate.js';
export { patchDimOf, resolveInputGeometry, resolvePatchGeometry, resolveScatterGeometry, type ConvPlacement, type InputGeometry, type PatchGeometry } from './patch-geometry.js';
export type { FloatData } from './sample-blocks.js';

export {
  DEFAULT_MAX_BYTES_PER_RUN, DEFAULT_MAX_PATCHES, DEFAULT_MAX_PATCH_DIM, planIndex, planLayer, planSlices, type CalibStats, type IndexSpec, type LayerStats, type SliceSpec,
  type StatSpec, type StatsOptions,
} from './stats-plan.js';
export { accumulateSlices } from './accumulate-slices.js';
export { groupByBudget } from './stats-runs.js';
export { collectAnchoredStats, type AnchoredStatsOptions, type FeedSource } from './anchored-stats.js';

/** Folds one fetched tensor into an accumulator; returns a reason when it does not fit the layer. */
async function accumulate(acc: Acc, t: HostTensor, engine: GemmEngine | undefined, maxPatches: number): Promise<string | undefined> {
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
      if (!geo) { geo = resolveInputGeometry(spec.conv, spec.scatter, dims); acc.geoCache.set(key, geo); }
      if (typeof geo === 'string') return geo;
      const { channels: cg, patches: pg } = geo;
      const positions = elementCount(cg.inSpatial);
      // A ConvTranspose's scatter patches are sampled by output position as a Conv's are.
      const pairs = st.patchGram ? samplePairs(patchPairCount(pg), maxPatches) : undefined;
      if (st.patchGram) st.patchTotal! += patchPairCount(pg);
      if (engine) {
        st.count += await accumulateConvChannelsOn(engine, st.gram, x, cg.batch, cg.channels, positions, cg.groups, acc.sum);
        if (st.patchGram) st.patchCount! += await accumulatePatchesOn(engine, st.patchGram, x, pg, acc.patchSum, pairs);
      } else {
        st.count += accumulateConvChannels(st.gram, x, cg.batch, cg.channels, positions, cg.groups, acc.sum);
        if (st.patchGram) st.patchCount! += accumulatePatches(st.patchGram, x, pg, acc.patchSum, pairs);
      }
      return undefined;
    }
  }
}

/** A note when some layers' patch statistics are over a sample of their patches (maxPatches), else nothing. */
export function sampledPatchesNote(stats: ReadonlyMap<string, { patchCount?: number; patchTotal?: number }>): string[] {
  const sampled = [...stats.values()].filter((st) => (st.patchTotal ?? 0) > (st.patchCount ?? 0));
  if (sampled.length === 0) return [];
  const read = sampled.reduce((a, st) => a + st.patchCount!, 0), total = sampled.reduce((a, st) => a + st.patchTotal!, 0);
  return [`patch statistics of ${sampled.length} layer(s) from a stratified sample of their im2col patches (${(100 * read / total).toPrecision(2)}% of them; at most ${DEFAULT_MAX_PATCHES} per layer and calibration input)`];
}

/** A note when some layers' statistics are Gather lookup counts (how many lookups, how many fell outside their tables), else nothing. */
export function lookupCountsNote(stats: ReadonlyMap<string, { rowCounts?: Float64Array; count: number; indexOutOfRange?: number }>): string[] {
  const gathers = [...stats.values()].filter((st) => st.rowCounts);
  if (gathers.length === 0) return [];
  // Gathers reading the same indices share one count: each lookup once.
  const distinct = [...new Set(gathers)];
  const inRange = distinct.reduce((a, st) => a + st.count, 0), outside = distinct.reduce((a, st) => a + (st.indexOutOfRange ?? 0), 0);
  return [`row weights of ${gathers.length} Gather(s) from ${inRange} calibration lookup(s)${outside > 0 ? ` (${outside} outside their tables, ignored)` : ''}`];
}

/** What the report says about the statistics: sampled patches, Gather lookup counts. */
export function statisticsNotes(stats: ReadonlyMap<string, { patchCount?: number; patchTotal?: number; rowCounts?: Float64Array; count: number; indexOutOfRange?: number }>): string[] {
  return [...sampledPatchesNote(stats), ...lookupCountsNote(stats)];
}

/**
 * Collects the input statistics of `layers` (from findLayers(model)) over `calib`.
 * Fails only when the model cannot run on the calibration feeds; layer-level problems
 * land in `unavailable`.
 */
export async function collectStats(model: Model, layers: readonly LayerInfo[], calib: CalibSet, opts: StatsOptions = {}): Promise<Result<CalibStats>> {
  const budget = opts.maxBytesPerRun ?? DEFAULT_MAX_BYTES_PER_RUN;
  if (!(budget > 0)) return err('usage', `maxBytesPerRun must be positive, got ${budget}`);
  const maxPatches = opts.maxPatches ?? DEFAULT_MAX_PATCHES;
  const sessionOpts: SessionOptions = { graphOptimizationLevel: 'disabled', ...opts.session, label: 'calibration copy of the model' };
  const proto = model.proto;

  // Gathers' statistics are the lookup counts of their indices, batched MatMul weights' one
  // Gram per slice; the other layers' are second moments.
  const isGather = (l: LayerInfo): boolean => l.op === 'Gather';
  const isBatched = (l: LayerInfo): boolean => l.op === 'MatMul' && l.weightShape.length > 2;
  const { unavailable, accs, layerAcc } = planAccumulators(model, layers.filter((l) => !isGather(l) && !isBatched(l)), opts.maxPatchDim ?? DEFAULT_MAX_PATCH_DIM, newAcc);
  const lookups = planIndexAccumulators(model, layers.filter(isGather), newIndexAcc);
  const slices = planSliceAccumulators(model, layers.filter(isBatched), newSliceAcc);
  for (const [name, why] of [...lookups.unavailable, ...slices.unavailable]) unavailable.set(name, why);
  const all: (Acc | IndexAcc | SliceAcc)[] = [...accs.values(), ...lookups.accs.values(), ...slices.accs.values()];
  const probeFeed = largestFeed(calib.feeds());
  if (!probeFeed) return err('usage', 'the calibration set has no feeds');
  const inputNames = new Set(Object.keys(probeFeed));

  const pr = await probeShapes(model, proto, all, probeFeed, opts.external, sessionOpts, opts.knownShapes);
  if (!pr.ok) return pr;
  let runs = pr.value.runs;
  const sizes = pr.value.sizes;
  // Passes: tensors that are model inputs come from the feeds (first pass); the others
  // are exposed as graph outputs, grouped under the budget.
  const byTensor = new Map<string, (Acc | IndexAcc | SliceAcc)[]>();
  for (const a of all) {
    if (a.failed) continue;
    const list = byTensor.get(a.spec.tensor);
    if (list) list.push(a); else byTensor.set(a.spec.tensor, [a]);
  }
  const fromFeed = [...byTensor.keys()].filter((t) => inputNames.has(t));
  // Indices are int64 at most, activations float32 (an fp16 model's take half that).
  const bytesPer = (t: string): number => (byTensor.get(t)!.some(isIndexAcc) ? 8 : 4);
  const estimate = [...byTensor.keys()].filter((t) => !inputNames.has(t)).map((name) => ({ name, bytes: bytesPer(name) * elementCount(sizes.get(name) ?? [0]) }));
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
            const why = isIndexAcc(acc) ? accumulateIndices(acc, value) : isSliceAcc(acc) ? accumulateSliceAcc(acc, value) : await accumulate(acc, value, opts.engine, maxPatches);
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

  const stats = finishLayers<Acc | IndexAcc | SliceAcc>(
    layers, (name) => layerAcc.get(name) ?? lookups.layerAcc.get(name) ?? slices.layerAcc.get(name),
    (acc) => acc.failed ?? (isIndexAcc(acc) ? finishIndex(acc) : finish(acc)), (acc) => acc.stats, unavailable,
  );
  return ok({ stats, unavailable, passes: groups.length, runs, samples: calib.samples });
}

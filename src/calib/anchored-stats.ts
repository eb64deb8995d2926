/**
 * Paired input statistics for anchored fitting (src/optimize/anchored.ts): per layer, what
 * collectStats (stats.ts) measures on the original model (x) and, on the same feeds, the
 * same sums over the layer's input x̂ in the partly compressed model with the cross term
 * Σ x̂·xᵀ (and the patch versions), in LayerStats.anchor.
 */
import type { Model } from '../graph/graph.js';
import type { LayerInputStats } from '../rewrite/pass.js';
import type { LayerInfo } from '../graph/layers.js';
import { createJsGemmEngine, type GemmEngine } from '../linalg/engine.js';
import { err, ok, type Result } from '../errors.js';
import { openFetcher, type TensorFetcher } from '../verify/intermediate.js';
import type { SessionOptions } from '../verify/session.js';
import { elementCount, type Feeds, type HostTensor } from '../verify/tensor.js';
import { accumulatePairBlocksOn, pairBlockWidth, unshiftPairSums, type PairSums } from './accumulate-engine.js';
import { patchDimOf, resolveInputGeometry } from './patch-geometry.js';
import { channelBlocks, patchBlocks, patchPairCount, rowBlocks, samplePairs, type FloatData, type SampleBlock } from './sample-blocks.js';
import { DEFAULT_MAX_BYTES_PER_RUN, DEFAULT_MAX_PATCHES, DEFAULT_MAX_PATCH_DIM, planAccumulators, type CalibStats, type StatSpec, type StatsOptions } from './stats-plan.js';
import { allFinite, finish, finishLayers, floatData, groupByBudget, largestFeed, newAcc, probeShapes, withOutputs, type Acc } from './stats-runs.js';
import { finishPatchSamples, newPatchSampler, takePatchSamples, type PatchSampler, type PatchSamples } from './patch-samples.js';

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
  /**
   * The original model's statistics of these layers over the same feeds (collectStats,
   * same sampling): their Σ x·xᵀ is reused instead of computed again, a third of the
   * products. A layer whose counts turn out to differ is reported unavailable.
   */
  original?: ReadonlyMap<string, LayerInputStats>;
  /**
   * Layers (by name) whose im2col patches are also kept whole, this many rows in both
   * models at the same pairs (calib/patch-samples.ts): in AnchoredStatsResult.patchSamples.
   */
  samples?: ReadonlyMap<string, number>;
}

/** collectAnchoredStats' result: the statistics and the patches kept per layer. */
export interface AnchoredStatsResult extends CalibStats {
  /** By layer name; a layer without (a grouped conv, no patches) is absent. */
  patchSamples: Map<string, PatchSamples>;
}

/** Paired sums of one statistic (beside the original's Acc). */
interface PairAcc { acc: Acc; pair: PairSums; patch?: PairSums; count: number; patchCount: number; patchTotal: number; same?: boolean; reused?: LayerInputStats }

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
): Promise<Result<AnchoredStatsResult>> {
  const budget = opts.maxBytesPerRun ?? DEFAULT_MAX_BYTES_PER_RUN;
  if (!(budget > 0)) return err('usage', `maxBytesPerRun must be positive, got ${budget}`);
  const sessionOpts: SessionOptions = { graphOptimizationLevel: 'disabled', ...opts.session, label: 'calibration copy of the model' };
  const unchangedSet = opts.unchanged;
  const unchanged = { has: (t: string): boolean => unchangedSet === 'all' || (unchangedSet?.has(t) ?? false) };
  const engine = opts.engine ?? createJsGemmEngine();
  const maxPatches = opts.maxPatches ?? DEFAULT_MAX_PATCHES;

  const { unavailable, accs, layerAcc } = planAccumulators(current, layers, opts.maxPatchDim ?? DEFAULT_MAX_PATCH_DIM, newPairAcc);
  if (opts.original) for (const layer of layers) reuseOriginal(layerAcc.get(layer.name), opts.original.get(layer.name));
  const samplers = new Map<PairAcc, PatchSampler>();
  for (const [name, rows] of opts.samples ?? []) {
    const p = layerAcc.get(name);
    if (p?.acc.spec.kind === 'conv' && !p.acc.spec.scatter && !samplers.has(p)) samplers.set(p, newPatchSampler(rows, calib.batches));
  }

  const probeFeed = largestFeed(calib.feeds());
  if (!probeFeed) return err('usage', 'the calibration set has no feeds');
  const inputNames = new Set(Object.keys(probeFeed));
  const pr = await probeShapes(original, original.proto, [...accs.values()].map((p) => p.acc), probeFeed, opts.external, sessionOpts, opts.knownShapes);
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
            const that = hat[t] ?? (unchanged.has(t) || inputNames.has(t) ? undefined : null);
            const why = await accumulatePair(p, value, that, engine, maxPatches);
            if (why) p.acc.failed = why;
            const sampler = samplers.get(p);
            if (!why && sampler) keepSamples(p, sampler, value, that ?? undefined);
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
  const patchSamples = new Map<string, PatchSamples>();
  for (const name of opts.samples?.keys() ?? []) {
    const p = layerAcc.get(name);
    const s = p && !p.acc.failed ? samplers.get(p) : undefined;
    const kept = s && finishPatchSamples(s);
    if (kept && stats.has(name)) patchSamples.set(name, kept);
  }
  return ok({ stats, unavailable, passes: groups.length, runs, samples: 0, patchSamples });
}

/** Keeps a feed's patches for the sampler (a sampler that cannot take them is dropped quietly: the layer is fitted without). */
function keepSamples(p: PairAcc, s: PatchSampler, t: HostTensor, that: HostTensor | undefined): void {
  const geo = p.acc.geoCache.get(t.dims.join('x'));
  const x = floatData(t);
  const xh = that ? floatData(that) : undefined;
  if (s.failed) return;
  if (!geo || typeof geo === 'string' || !x || (that && !xh) || takePatchSamples(s, geo.patches, x, xh)) s.failed = true;
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
  return { acc, pair, patch, count: 0, patchCount: 0, patchTotal: 0 };
}

/** Takes the original's Σ x·xᵀ (and patch version) from `o` where its shape matches, so the accumulator neither computes nor writes it. */
function reuseOriginal(p: PairAcc | undefined, o: LayerInputStats | undefined): void {
  if (!p || !o || p.reused) return;
  const st = p.acc.stats;
  if (o.dim !== st.dim || o.groups !== st.groups || o.gram.length !== st.gram.length) return;
  p.reused = o;
  st.gram = o.gram;
  p.pair.gram = o.gram;
  p.pair.noGram = true;
  if (p.patch && st.patchGram && o.patchGram && o.patchDim === st.patchDim && o.patchGram.length === st.patchGram.length) {
    st.patchGram = o.patchGram;
    p.patch.gram = o.patchGram;
    p.patch.noGram = true;
  }
}

/** The block streams of one tensor as a layer reads it, or why it does not fit. */
function blockStreams(p: PairAcc, t: HostTensor, x: FloatData, maxPatches: number): { vec: Generator<SampleBlock, void, void>[]; patch?: Generator<SampleBlock, void, void>; count: number; patchCount: number; patchTotal?: number } | string {
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
      if (!geo) { geo = resolveInputGeometry(spec.conv, spec.scatter, dims); p.acc.geoCache.set(key, geo); }
      if (typeof geo === 'string') return geo;
      // A ConvTranspose's patches are its scatter patches (pg.transposed), paired the same way.
      const { channels: cg, patches: pg } = geo;
      const positions = elementCount(cg.inSpatial);
      const s = cg.channels / cg.groups;
      // Both models' inputs have the same geometry, so they are read at the same pairs.
      const pairs = p.patch ? samplePairs(patchPairCount(pg), maxPatches) : undefined;
      return {
        vec: [channelBlocks(x, cg.batch, cg.channels, positions, cg.groups, pairBlockWidth(s))],
        patch: p.patch ? patchBlocks(x, pg, pairBlockWidth(patchDimOf(pg)), pairs) : undefined,
        count: cg.batch * positions,
        patchCount: patchPairCount(pg, pairs),
        patchTotal: patchPairCount(pg),
      };
    }
  }
}

/**
 * Folds one feed's x (and x̂) into paired sums. `that` undefined: x̂ = x (nothing
 * compressed upstream); null: x̂ was expected but not fetched.
 */
async function accumulatePair(p: PairAcc, t: HostTensor, that: HostTensor | undefined | null, engine: GemmEngine, maxPatches: number): Promise<string | undefined> {
  if (that === null) return 'its input was not fetched from the partly compressed model';
  const x = floatData(t);
  if (!x) return `its input is ${t.type}, not a float tensor`;
  const xh = that ? floatData(that) : x;
  if (!xh) return `its input in the partly compressed model is ${that!.type}, not a float tensor`;
  if (that && (that.dims.length !== t.dims.length || that.dims.some((d, i) => d !== t.dims[i]))) {
    return `its input has dims [${that.dims.join(', ')}] in the partly compressed model, [${t.dims.join(', ')}] in the original`;
  }
  const a = blockStreams(p, t, x, maxPatches);
  if (typeof a === 'string') return a;
  const st = p.acc.stats;
  if (p.same !== undefined && p.same !== !that) return 'its input was fetched from the partly compressed model for some feeds only';
  p.same = !that;
  if (!that) {
    await accumulatePairBlocksOn(engine, p.pair, st.dim, a.vec[0]!, 'same');
    if (p.patch && a.patch) await accumulatePairBlocksOn(engine, p.patch, st.patchDim!, a.patch, 'same');
  } else {
    const b = blockStreams(p, that, xh, maxPatches);
    if (typeof b === 'string') return b;
    await accumulatePairBlocksOn(engine, p.pair, st.dim, a.vec[0]!, b.vec[0]!);
    if (p.patch && a.patch && b.patch) await accumulatePairBlocksOn(engine, p.patch, st.patchDim!, a.patch, b.patch);
  }
  p.count += a.count;
  p.patchCount += a.patchCount;
  p.patchTotal += a.patchTotal ?? 0;
  return undefined;
}

/** Means and the anchor of a paired accumulator; a reason when its sums are not usable. */
function finishPair(p: PairAcc): string | undefined {
  const st = p.acc.stats;
  // A reused Σ x·xᵀ must be over the very samples the paired sums read.
  const o = p.reused;
  if (o && o.count !== p.count) return `its statistics counted ${o.count} input vectors, the paired ones ${p.count}`;
  if (o && p.patch?.noGram && o.patchCount !== p.patchCount) return `its statistics counted ${o.patchCount} patches, the paired ones ${p.patchCount}`;
  st.count = p.count;
  if (st.patchGram) { st.patchCount = p.patchCount; st.patchTotal = p.patchTotal; }
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

/**
 * Anchored sequential fitting: each compressed layer is fitted to what the ORIGINAL layer
 * computes from the original model's activations, given what the partly compressed model
 * actually feeds it (linalg/anchored.ts has the maths), so the errors of earlier layers are
 * compensated instead of compounded.
 *
 * How:
 * 1. The driver decides every layer's pass and ranks as usual (optimizeModel with
 *    decideOnly: the same choices, hence the same ranks, as an independent fit).
 * 2. The layers to rewrite are put in waves: a layer's wave is one more than the latest
 *    wave of the rewritten layers upstream of its input, so the layers of one wave do not
 *    feed each other and share one pass over the calibration data. Past maxWavesFor (8, or
 *    more for a model whose runs are cheap) consecutive waves are merged (a chain would otherwise cost a pass per layer): a layer
 *    of a merged wave sees the rewrites of the earlier waves, not those of its own.
 * 3. Per wave, the original model and the model as rewritten so far run on the same feeds;
 *    the wave's input statistics are paired (calib/stats.ts collectAnchoredStats: Σ x·xᵀ,
 *    Σ x̂·x̂ᵀ, Σ x̂·xᵀ and the patch versions, means), and each layer of the wave is
 *    rewritten with them (the passes fit anchored when the statistics carry an `anchor`).
 *    The first wave has nothing compressed upstream: x̂ = x, one run.
 *    Before the fit, each layer's paired statistics are shrunk toward the original's by its
 *    rows per dimension (calib/anchor-shrink.ts): with few rows the compensation of upstream
 *    errors fits the calibration set's own errors and does not carry over to other inputs.
 * `lastWaveOnly` fits only the last wave anchored (one statistics pass): a cheap probe of
 * whether anchoring carries over to inputs it was not fitted on.
 * Layers inside subgraphs (their inputs cannot be exposed) and layers without paired
 * statistics are fitted as before (independent statistics, or none), and the notes say so.
 * Each wave's statistics are dropped once its layers are rewritten, so memory stays that
 * of one wave's statistics (within the budget of collectStats per run).
 */
import { decodeModel, encodeModel } from '../onnx/codec.js';
import { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { GemmEngine } from '../linalg/engine.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import type { Checkpoint } from '../graph/graph.js';
import type { NodeProto } from '../onnx/schema.js';
import { isSkip, type FactoredLayer, type LayerInputStats, type PassContext } from '../rewrite/pass.js';
import { createRng } from '../util/rng.js';
import type { Feeds } from '../verify/tensor.js';
import { collectAnchoredStats } from '../calib/anchored-stats.js';
import { ANCHOR_ROWS_PER_DIM, shrinkAnchor, shrinkageOf } from '../calib/anchor-shrink.js';
import { sampleRowsFor, type PatchSamples } from '../calib/patch-samples.js';
import { passByName } from '../../passes/dispatch.js';
import { bind } from '../rewrite/registry.js';
import { chainPatchMap, convPatchMap, flatActivationOf, refitThroughActivation, type Activation, type PatchMap } from './flat-refit.js';
import { cleanUp, optimizeModel, type OptimizeOptions, type RunContext } from './driver.js';
import type { LayerRecord, PlanFile } from './plan.js';

export interface AnchorInputs {
  /** The calibration feeds (the same ones for both models). */
  feeds: readonly Feeds[];
  /** Payloads of external tensors of the model being rewritten. */
  external?: ExternalBytes;
  /** Where the statistics' Gram products run (e.g. createOrtGemmEngine()); default JS. */
  engine?: GemmEngine;
  /** Budget of the tensors one statistics run exposes (calib/stats.ts default when absent). */
  maxBytesPerRun?: number;
  onStage?: (stage: string) => void;
  onProgress?: (done: number, total: number, what: string) => void;
  /** κ of the shrinkage toward the original's statistics (calib/anchor-shrink.ts); 0 = none. Default ANCHOR_ROWS_PER_DIM. */
  rowsPerDim?: number;
  /** Waves at most (anchorWaves); default maxWavesFor the model's MACs and the feeds. */
  maxWaves?: number;
  /** Intra-op threads of both models' runs (default 1). */
  threads?: number;
  /** The run's statistics are over other feeds than `feeds` (a subset was left out): nothing of them is reused. */
  otherFeeds?: boolean;
  /**
   * Fit only the last wave anchored, every earlier layer independently: one statistics
   * pass instead of one per wave. The last layers see the most upstream error to
   * compensate, so this probe tells cheaply whether anchoring carries over to new inputs
   * before the run pays for every wave (budget-run.ts).
   */
  lastWaveOnly?: boolean;
  /**
   * Refit convs whose output only a Relu or Clip reads through that activation
   * (optimize/flat-refit.ts); default false (every fit is the linear one): on ISNet's 44
   * heaviest convs it lowered the held-out error 9% but took the anchored fit from 12 to
   * 27 minutes.
   */
  throughActivations?: boolean;
  /**
   * No anchoring (--no-anchor): every layer keeps its independent fit on the run's
   * statistics, and only the convs refitted through their activation need a pass, of the
   * original model alone (x̂ = x), for their patch samples. For throughActivations without
   * anchoring.
   */
  independent?: boolean;
}

export interface AnchoredOutcome {
  records: LayerRecord[];
  notes: string[];
  /** Waves the layers were put in (after merging). */
  waves: number;
  /** Layers refitted through their activation (kept refits). */
  refitted: number;
}

/**
 * Waves a run fits at most by default. A chain-like network puts every layer in its own
 * wave, and each wave runs both models up to its layers on every calibration feed (ISNet:
 * 39 waves took an hour); merged, a layer sees x̂ with the rewrites of the earlier merged
 * waves only, not those of its own.
 */
export const DEFAULT_MAX_WAVES = 8;

/**
 * Multiply-accumulates the waves may run in all (both models, every feed) before they are
 * merged down to DEFAULT_MAX_WAVES: a small model gets a wave per layer depth (PP-OCRv4
 * rec, 33 layers on 8 feeds: 33 waves instead of 8 lowered its held-out error from 0.995x
 * to 0.958x of the independent fit's, 13 s → 23 s), ISNet (about 1e12 per wave on three
 * photos) keeps 8.
 */
export const WAVE_MACS = 2e12;

/** Waves at most for a model of `macsPerFeed` (its layers' MACs, per feed) on `feeds` feeds: DEFAULT_MAX_WAVES, or more when WAVE_MACS allows. */
export function maxWavesFor(macsPerFeed: number | undefined, feeds: number): number {
  if (macsPerFeed === undefined || !(macsPerFeed > 0)) return DEFAULT_MAX_WAVES;
  return Math.max(DEFAULT_MAX_WAVES, Math.floor(WAVE_MACS / (2 * macsPerFeed * Math.max(1, feeds))));
}

/**
 * Wave of each main-graph layer to rewrite (1 = nothing rewritten upstream of its input).
 * With `maxWaves`, consecutive waves are merged into at most that many, evenly.
 */
export function anchorWaves(model: Model, layers: readonly LayerInfo[], maxWaves = Infinity): Map<LayerInfo, number> {
  const g = model.root;
  const byNode = new Map(layers.filter((l) => l.graph === g).map((l) => [l.node, l]));
  const depth = new Map<string, number>();
  const waves = new Map<LayerInfo, number>();
  for (const n of g.proto.node) {
    let d = 0;
    for (const v of [...n.input, ...g.implicitInputsOf(n)]) if (v) d = Math.max(d, depth.get(v) ?? 0);
    const layer = byNode.get(n);
    if (layer) { waves.set(layer, d + 1); d += 1; }
    for (const o of n.output) if (o) depth.set(o, d);
  }
  const count = Math.max(0, ...waves.values());
  if (count <= maxWaves) return waves;
  const cap = Math.max(1, Math.floor(maxWaves));
  return new Map([...waves].map(([l, w]) => [l, Math.ceil((w * cap) / count)]));
}

/**
 * Decides ranks as optimizeModel would (from `plan` when given), then rewrites the chosen layers wave by wave with
 * anchored fits on `inp.feeds`. Rewrites `model` in place (like optimizeModel).
 */
export async function optimizeAnchored(
  model: Model, shapes: ShapeMap | undefined, opts: OptimizeOptions, inp: AnchorInputs,
  plan: PlanFile | undefined = opts.plan, run: RunContext = {},
): Promise<AnchoredOutcome> {
  const notes: string[] = [];
  // The original, for the reference activations x (the model itself is rewritten in place).
  const original = new Model(decodeModel(encodeModel(model.proto)));
  const records = optimizeModel(model, shapes, { ...opts, decideOnly: true }, plan, run);
  const byName = new Map(records.map((r) => [r.name, r]));
  const all = findLayers(model, shapes);
  const todo = all.filter((l) => {
    const r = byName.get(l.name);
    return r && !r.skipped && r.pass && r.ranks;
  });
  const macs = all.every((l) => l.macs !== undefined) ? all.reduce((a, l) => a + l.macs!, 0) : undefined;
  // Without anchoring one pass of the original serves every refit: x̂ = x for all layers.
  const waves = anchorWaves(model, todo, inp.independent ? 1 : inp.maxWaves ?? maxWavesFor(macs, inp.feeds.length));
  const count = Math.max(0, ...waves.values());
  const base = { model, rng: createRng(opts.seed), external: run.external, shared: new Map(), gemm: run.gemm, outputSensitivity: run.outputSensitivity };
  const independent: PassContext = { ...base, stats: run.stats };
  const fallback: string[] = [];
  let runs = 0;

  const apply = (layer: LayerInfo, cx: PassContext): string | undefined => {
    const rec = byName.get(layer.name)!;
    const pass = passByName(rec.pass!);
    if (!pass) return `unknown pass ${rec.pass}`;
    try {
      const b = bind(pass, layer, cx);
      if (isSkip(b)) return b.skip;
      const applied = b.apply(rec.ranks!, cx);
      if (isSkip(applied)) return applied.skip;
      rec.relError = applied.relError;
      rec.nodes = applied.nodes;
      if (applied.note) rec.note = rec.note ? `${rec.note}; ${applied.note}` : applied.note;
      if (applied.dataError !== undefined) rec.dataError = applied.dataError; else delete rec.dataError;
      return undefined;
    } catch (e) {
      return (e as Error).message;
    }
  };
  /** Anchored when `stats` has the layer, else (or when that fails) the independent fit; through its activation when `samples` are given. */
  const rewrite = (layer: LayerInfo, stats: ReadonlyMap<string, LayerInputStats> | undefined, why: string | undefined, samples?: PatchSamples): void => {
    const rec = byName.get(layer.name)!;
    const t0 = performance.now();
    // Only a layer refitted through its activation needs the state to return to.
    const refit = samples && flat.has(layer.name);
    const cp = refit ? layer.graph.checkpoint() : undefined;
    const original = layer.node;
    const noteBefore = rec.note;
    // Without anchoring the linear fit is the independent one, whatever the refit does.
    let failed = inp.independent ? apply(layer, independent) : stats?.has(layer.name) ? apply(layer, { ...base, stats }) : why ?? 'no paired statistics';
    if (failed !== undefined && !inp.independent) {
      fallback.push(`${layer.name} (${failed})`);
      failed = apply(layer, independent);
    } else if (failed === undefined && refit && stats?.has(layer.name)) {
      const outcome = throughActivation(layer, original, stats!.get(layer.name)!, samples!, flat.get(layer.name)!, cp!, noteBefore);
      if (outcome.kept) refitted++;
      if (!outcome.skipped) tried++;
    }
    rec.ms = Math.round((rec.ms + performance.now() - t0) * 10) / 10;
    if (failed !== undefined) {
      rec.skipped = true;
      rec.reason = failed;
      rec.paramsAfter = rec.paramsBefore;
      rec.macsAfter = rec.macsBefore;
      delete rec.relError;
      delete rec.dataError;
    }
  };

  // Convs read by a Relu/Clip alone, found before any rewrite (a chain keeps the conv's output name).
  const flat = new Map<string, Activation>();
  if (inp.throughActivations === true && !inp.lastWaveOnly) {
    for (const l of todo) {
      const r = flatActivationOf(l);
      if (r) flat.set(l.name, r);
    }
  }
  let refitted = 0;
  let tried = 0;
  const throughActivation = (
    layer: LayerInfo, node: NodeProto, st: LayerInputStats, samples: PatchSamples, region: Activation, cp: Checkpoint, noteBefore: string | undefined,
  ): { kept: boolean; skipped?: boolean } => {
    const rec = byName.get(layer.name)!;
    const orig = originalMaps.get(layer.name);
    const pass = passByName(rec.pass!);
    if (!orig || !pass) return { kept: false, skipped: true };
    const factored = (): FactoredLayer => ({ name: layer.name, original: node, weightInput: layer.weightInput, weightDims: layer.weightShape, nodes: rec.nodes ?? [] });
    const hooks = {
      apply: (next: LayerInputStats): string | undefined => {
        rec.note = noteBefore;
        return apply(layer, { ...base, stats: new Map([[layer.name, next]]) });
      },
      applyLinear: (): string | undefined => {
        rec.note = noteBefore;
        return apply(layer, inp.independent ? independent : { ...base, stats: new Map([[layer.name, st]]) });
      },
      current: (): PatchMap | string => chainPatchMap(model, factored(), pass, orig, run.external),
      rollback: (): void => layer.graph.rollback(cp),
    };
    let out: { kept: boolean; skipped?: boolean; note: string; dataError?: number };
    try {
      out = refitThroughActivation(st, samples, orig, region, hooks, base.gemm);
    } catch (e) {
      // Whatever failed in the refit, the layer gets its linear fit back.
      hooks.rollback();
      const again = hooks.applyLinear();
      if (again) throw new Error(`${layer.name}: the linear fit could not be applied again after the refit failed: ${again}`);
      out = { kept: false, note: `fit through the activation failed (${(e as Error).message})` };
    }
    rec.note = rec.note ? `${rec.note}; ${out.note}` : out.note;
    if (out.kept && out.dataError !== undefined) rec.dataError = out.dataError;
    return out;
  };
  const originalMaps = new Map<string, PatchMap>();
  for (const l of todo) {
    if (!flat.has(l.name)) continue;
    const m = convPatchMap(l, run.external);
    if (m) originalMaps.set(l.name, m); else flat.delete(l.name);
  }

  const feedSource = { feeds: () => inp.feeds, batches: inp.feeds.length };
  const kappa = inp.rowsPerDim ?? ANCHOR_ROWS_PER_DIM;
  const leaning = new Set<string>();
  // The layers of wave w fitted on statistics it collects (the others take the run's, at once).
  const collected = (w: number): LayerInfo[] => {
    const layers = todo.filter((l) => waves.get(l) === w);
    if (inp.lastWaveOnly && w < count) return [];
    return inp.independent ? layers.filter((l) => flat.has(l.name)) : layers;
  };
  // Progress counts those layers across all waves (a wave's statistics and fits as its layers' share), so the estimate covers what is left of the phase.
  const total = Array.from({ length: count }, (_, i) => collected(i + 1).length).reduce((a, b) => a + b, 0);
  let done = 0;
  if (total > 0) inp.onStage?.(inp.independent ? `fits through the activation: patch samples of ${total} conv(s)` : `anchored fitting: ${total} layer(s) in ${count} wave(s)`);
  for (let w = 1; w <= count; w++) {
    const layers = collected(w);
    for (const layer of todo.filter((l) => waves.get(l) === w && !layers.includes(l))) rewrite(layer, run.stats, undefined);
    if (layers.length === 0) continue;
    inp.onProgress?.(done, total, `wave ${w}/${count}: ${inp.independent ? 'patch samples' : 'statistics'} of ${layers.length} layer(s)`);
    const st = await collectAnchoredStats(original, model, layers, feedSource, {
      external: inp.external, engine: inp.engine, maxBytesPerRun: inp.maxBytesPerRun, knownShapes: shapes, ...(inp.threads && { session: { intraOpNumThreads: inp.threads, spinning: false } }),
      // Nothing is rewritten upstream of the first wave: the original's run serves both.
      unchanged: w === 1 ? 'all' : undefined,
      // The original's Σ x·xᵀ is in the run's statistics already (same feeds and samples).
      original: inp.otherFeeds ? undefined : run.stats,
      samples: new Map(layers.filter((l) => flat.has(l.name)).map((l) => [l.name, sampleRowsFor(originalMaps.get(l.name)!.w.cols)])),
    });
    if (!st.ok) throw st.error;
    runs += st.value.runs;
    // Each layer's compensation shrunk toward the original's statistics by its rows per dimension (calib/anchor-shrink.ts).
    const shrunk = new Map([...st.value.stats].map(([name, s]) => {
      const k = shrinkageOf(s, kappa);
      if (s.anchor && s.anchor.gram !== s.gram && Math.min(k.alpha, k.patchAlpha) < 0.5) leaning.add(name);
      return [name, shrinkAnchor(s, k, true)]; // the wave's own sums, read no more
    }));
    for (const layer of layers) {
      inp.onProgress?.(done++, total, `wave ${w}/${count}: ${layer.name}`);
      // A Gather's statistics are lookup counts of its indices, which no upstream rewrite changes: the run's own.
      if (layer.op === 'Gather') rewrite(layer, run.stats, undefined);
      else rewrite(layer, shrunk, st.value.unavailable.get(layer.name), st.value.patchSamples.get(layer.name));
    }
  }
  if (total > 0) inp.onProgress?.(total, total, '');
  // Layers inside subgraphs: no paired statistics can be collected for them.
  for (const layer of todo.filter((l) => !waves.has(l))) rewrite(layer, undefined, 'inside a subgraph');
  cleanUp(model);

  if (inp.lastWaveOnly) {
    const last = todo.filter((l) => waves.get(l) === count);
    const failed = last.filter((l) => fallback.some((f) => f.startsWith(`${l.name} (`))).length;
    notes.push(`anchored fitting (probe): the last of ${count} wave(s), ${last.length - failed} layer(s), fitted anchored, the other ${todo.length - last.length} independently (${runs} model runs on ${inp.feeds.length} calibration feed(s))`);
    return { records, notes, waves: count, refitted };
  }
  const untried = (): string => (tried < flat.size ? `; ${flat.size - tried} not tried (too few patch samples, e.g. convs on pooled vectors, or no statistics: their notes say)` : '');
  if (inp.independent) {
    notes.push(flat.size === 0
      ? 'fits through the activation: no conv to rewrite is read by a Relu or Clip alone (every layer keeps its independent fit)'
      : `fits through the activation: ${refitted} of ${flat.size} conv(s) read by a Relu/Clip alone refitted through it (lower error after the activation on held-back patches)${untried()}, every other layer keeps its independent fit (patch samples of the original model on ${inp.feeds.length} calibration feed(s))`);
    return { records, notes, waves: count, refitted };
  }
  const anchored = todo.length - fallback.length;
  notes.push(`anchored fitting: ${anchored} layer(s) fitted to the original model's outputs in ${count} wave(s) (${runs} model runs on ${inp.feeds.length} calibration feed(s))`);
  const lean = todo.filter((l) => leaning.has(l.name)).length;
  if (lean > 0) notes.push(`anchored fitting: ${lean} layer(s) have few calibration rows per input dimension, so their fits lean toward the original's inputs (more calibration data helps them)`);
  if (flat.size > 0) notes.push(`anchored fitting: ${refitted} of ${flat.size} conv(s) read by a Relu/Clip alone fitted through it (lower error after the activation on held-back patches; the others keep the linear fit)${untried()}`);
  if (fallback.length > 0) notes.push(`anchored fitting: ${fallback.length} layer(s) fitted independently instead: ${fallback.join('; ')}`);
  return { records, notes, waves: count, refitted };
}

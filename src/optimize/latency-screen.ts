/**
 * The latency screen of a run without a budget: fewer MACs is not fewer milliseconds (a
 * 7x7 stem on 3 channels became a CP chain whose depthwise conv ran at full resolution on
 * 61 channels, and a DenseNet-like model ran 0.72x), so every rewrite the default rule
 * would make is timed in ORT against its layer, each cut out alone at its real input shape
 * (layer-latency.ts), and only the rewrites measured faster by a margin are kept.
 *
 * How: the driver decides passes and ranks without rewriting (decideOnly); each decided
 * rewrite is then applied to the live graph, its chain cut out and timed, and the graph
 * rolled back (as sensitivity trials do); the decisions that survive become a plan, which
 * the caller applies as usual (optimizeModel, or anchored fitting in waves). The trial's
 * chain is fitted weight-only: ORT's CPU kernels cost the same whatever the weight values
 * (dense kernels, no sparsity), and a chain's nodes, shapes and ranks do not depend on the
 * fit; the data-aware or anchored fit that is kept comes later, from the plan. Chains of
 * the same pass and ranks on the same layer geometry are timed once.
 */
import type { LayerInfo } from '../graph/layers.js';
import { constantOrCastFed, findLayers } from '../graph/layers.js';
import type { Model } from '../graph/graph.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { SyncGemm } from '../linalg/engine.js';
import type { ExternalReader } from '../onnx/external.js';
import { isSkip, type PassContext } from '../rewrite/pass.js';
import { bind } from '../rewrite/registry.js';
import { createRng } from '../util/rng.js';
import { passByName } from '../../passes/dispatch.js';
import { optimizeModel, type OptimizeOptions, type RunContext } from './driver.js';
import { chainKey, timeRewrite, type ChainsTimer, type LayerTimer, type LayerTiming } from './layer-latency.js';
import { preferFaster, type PlannedContender } from './method-latency.js';
import { withRewrite } from './trial.js';
import type { LayerRecord, PlanFile } from './plan.js';

export type { LayerTimer };

/**
 * A rewrite is kept when its chain's median is at least this fraction below the layer's.
 * The two medians come from interleaved runs of two small models (≥ 15 each, ≥ 0.15 s):
 * timing 8 layers of PP-OCR rec and det against identical copies of themselves, 6 times
 * each on this shared 2-core machine (1 thread), gave ratios within 0.96–1.04, and one
 * 0.92 under a load spike. A smaller gain cannot be told from noise, and a lossy rewrite
 * that is not clearly faster costs accuracy for nothing.
 */
export const SCREEN_MARGIN = 0.05;


export interface ScreenOptions {
  /** ORT intra-op threads, as verification times the whole model (latency depends on them). */
  threads: number;
  external?: ExternalReader;
  /** Where the trial factorizations' large products run; default JS. */
  gemm?: SyncGemm;
  seed: number;
  /** Default SCREEN_MARGIN. */
  margin?: number;
  /** Default timeRewrite; tests inject a fake so that no verdict depends on machine speed. */
  time?: LayerTimer;
  /** Times a layer's contenders together under auto (method-latency.ts); default timeChains; tests inject a fake. */
  timeChains?: ChainsTimer;
  onStage?: (stage: string) => void;
  onProgress?: (done: number, total: number, what: string) => void;
}

export interface ScreenOutcome {
  /** The decisions, those not measured faster marked skipped with the timings as reason. */
  records: LayerRecord[];
  /** Rewrites dropped as not faster. */
  dropped: number;
  /** Rewrites timed (distinct chains timed once). */
  timed: number;
  notes: string[];
}

const dims = (d: readonly number[] | undefined): string => (d ? d.join('x') : '?');
const fmtMs = (ms: number): string => (ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms >= 0.1 ? ms.toFixed(3) : ms.toFixed(4));

/** The activations a layer reads (not its weight or bias): their shapes are what the reason names. */
function activations(layer: LayerInfo): string[] {
  return layer.node.input.filter((v, i) => v && i !== layer.weightInput && !constantOrCastFed(layer.graph, v));
}


/**
 * Applies a decided rewrite to the live graph (weight-only fit), times the chain it wrote
 * against the layer, and restores the graph exactly. A string says why it was not timed.
 */
async function timeDecision(
  model: Model, layer: LayerInfo, rec: LayerRecord, shapes: ShapeMap, opts: ScreenOptions, time: LayerTimer,
): Promise<LayerTiming | string> {
  const pass = passByName(rec.pass!);
  if (!pass) return `unknown pass ${rec.pass}`;
  const cx: PassContext = { model, rng: createRng(opts.seed), external: opts.external, shared: new Map(), gemm: opts.gemm };
  try {
    const b = bind(pass, layer, cx);
    if (isSkip(b)) return b.skip;
    const t = await withRewrite(layer.graph, b, rec.ranks!, cx, (_applied, chain) => time(model, layer, chain, shapes, { threads: opts.threads, external: opts.external }));
    if (isSkip(t)) return t.skip;
    return t.ok ? t.value : t.error.message;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Times every rewrite in `decided` (records of optimizeModel with decideOnly on `model`,
 * which is left as it was) and marks those not measured faster by the margin as skipped.
 * Rewrites that cannot be timed (a layer inside a subgraph has no known input shape, a
 * trial that fails) are kept as decided, and a note says so.
 */
export async function screenByLatency(model: Model, shapes: ShapeMap, decided: readonly LayerRecord[], opts: ScreenOptions): Promise<ScreenOutcome> {
  const margin = opts.margin ?? SCREEN_MARGIN;
  const time = opts.time ?? timeRewrite;
  const byName = new Map(findLayers(model, shapes).map((l) => [l.name, l]));
  const records = decided.map((r) => ({ ...r }));
  const todo = records.filter((r) => !r.skipped && r.pass && r.ranks && byName.has(r.name));
  const cache = new Map<string, LayerTiming | string>();
  const untimed: string[] = [];
  const droppedNames: string[] = [];
  let timed = 0;
  if (todo.length > 0) opts.onStage?.(`timing ${todo.length} rewrite(s) against their layers in ORT`);
  for (const [i, rec] of todo.entries()) {
    opts.onProgress?.(i, todo.length, rec.name);
    const layer = byName.get(rec.name)!;
    const key = chainKey(layer, rec.pass!, rec.ranks!, shapes);
    let t = cache.get(key);
    if (t === undefined) {
      t = await timeDecision(model, layer, rec, shapes, opts, time);
      cache.set(key, t);
      if (typeof t !== 'string') timed++;
    }
    if (typeof t === 'string') { untimed.push(`${rec.name} (${t})`); continue; }
    if (t.candidateMs <= t.originalMs * (1 - margin)) continue;
    const at = `in ORT at ${activations(layer).map((v) => dims(shapes.get(v))).join(', ')}: ${fmtMs(t.originalMs)} ms → ${fmtMs(t.candidateMs)} ms`;
    rec.reason = t.candidateMs >= t.originalMs
      ? `measured slower ${at}`
      : `not measurably faster ${at} (a rewrite must save ${Math.round(margin * 100)}%)`;
    rec.skipped = true;
    rec.paramsAfter = rec.paramsBefore;
    rec.macsAfter = rec.macsBefore;
    droppedNames.push(rec.name);
  }
  opts.onProgress?.(todo.length, todo.length, '');
  const notes: string[] = [];
  if (todo.length > 0) {
    notes.push(droppedNames.length > 0
      ? `latency screen: ${droppedNames.length} of ${todo.length} rewrite(s) dropped as not at least ${Math.round(margin * 100)}% faster than their layer in ORT (${opts.threads} thread(s)): ${droppedNames.join(', ')}; --save params keeps them`
      : `latency screen: all ${todo.length} rewrite(s) measured at least ${Math.round(margin * 100)}% faster than their layer in ORT (${opts.threads} thread(s))`);
  }
  if (untimed.length > 0) notes.push(`latency screen: ${untimed.length} rewrite(s) could not be timed and are kept by the params-and-MACs rule: ${untimed.join('; ')}`);
  return { records, dropped: droppedNames.length, timed, notes };
}

/** Wraps a phase of the work (e.g. to record its time). */
export type Phase = <T>(fn: () => Promise<T>) => Promise<T>;

/**
 * The default run's decisions, screened by latency, as a plan to apply (by optimizeModel or
 * optimizeAnchored). Under auto, a layer where a rival won the comparison on error first
 * gets the fastest of the chains within that error, timed together in ORT (preferFaster:
 * fewer MACs is not fewer milliseconds); the screen then judges the kept chain against the
 * layer. A layer with one contender is not timed twice, and its decision is as decided.
 * `model` is left as it was. `phases` wrap the deciding and the timing (the pipeline
 * records them as factorization and screen).
 */
export async function screenedPlan(
  model: Model, shapes: ShapeMap, opts: OptimizeOptions, run: RunContext, screen: Omit<ScreenOptions, 'seed' | 'external' | 'gemm'>,
  phases: { decide?: Phase; screen?: Phase } = {},
): Promise<{ plan: PlanFile; notes: string[]; dropped: number }> {
  const direct: Phase = (fn) => fn();
  // The choices a later rival replaced along auto's comparison, per layer: the driver
  // records them (RunContext.contenders), and they are timed beside the kept one.
  const contenders = new Map<string, PlannedContender[]>();
  const decided = await (phases.decide ?? direct)(async () => optimizeModel(model, shapes, { ...opts, decideOnly: true }, undefined, { ...run, contenders }));
  const s = await (phases.screen ?? direct)(async () => {
    const fastest = opts.method === 'auto'
      ? await preferFaster(model, decided, {
        policy: opts.policy, seed: opts.seed, threads: screen.threads, shapes, external: run.external, gemm: run.gemm, time: screen.timeChains,
        contenders, onStage: screen.onStage, onProgress: screen.onProgress,
      })
      : { records: decided, notes: [] };
    const r = await screenByLatency(model, shapes, fastest.records, { ...screen, seed: opts.seed, external: run.external, gemm: run.gemm });
    return { ...r, notes: [...fastest.notes, ...r.notes] };
  });
  return { plan: { version: 1, model: '', policy: 'latency screen', layers: s.records }, notes: s.notes, dropped: s.dropped };
}

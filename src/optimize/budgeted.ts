/**
 * Whole-model rank choice under a budget: measure each layer's sensitivity on the
 * calibration inputs (one or two rungs per layer run in ORT, the others predicted, unless
 * `measureAllRungs`), allocate ranks globally (budget.ts), and turn the allocation into a
 * plan the driver applies exactly.
 */
import type { SyncGemm } from '../linalg/engine.js';
import { rankMultiple } from '../linalg/rank.js';
import { LrError } from '../errors.js';
import type { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ExternalReader } from '../onnx/external.js';
import type { LayerInputStats, PassContext } from '../rewrite/pass.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';
import { createRng } from '../util/rng.js';
import { allocate, type Allocation, type Budget } from './budget.js';
import { filterReasons, type LayerFilter, type MethodChoice } from './driver.js';
import type { LayerRecord, PlanFile } from './plan.js';
import { measureSensitivity, type LayerSensitivity } from './sensitivity.js';
import type { FitCache } from '../rewrite/fit-cache.js';

export interface BudgetedOptions extends LayerFilter {
  method: MethodChoice;
  align?: number;
  seed: number;
  external?: ExternalReader;
  stats?: ReadonlyMap<string, LayerInputStats>;
  feeds: readonly Feeds[];
  reference: readonly Record<string, HostTensor>[];
  /** Time candidates' chains against their layers in ORT (these threads) and keep only faster ones. */
  layerLatency?: { threads: number; shapes: ShapeMap };
  /** Model totals, to skip layers too small to matter. */
  totals?: { params: number; macs?: number };
  /** Where the factorizations' large products run; default JS. */
  gemm?: SyncGemm;
  /** The run's data-aware factorizations, reused by its allocations (rewrite/fit-cache.ts). */
  fits?: FitCache;
  /** Output-channel sensitivities (PassContext.outputSensitivity): trials fit as the final fit will, and weigh their layer's own error. */
  outputSensitivity?: ReadonlyMap<string, Float64Array>;
  /**
   * Run every candidate rung in ORT instead of one per layer with the rest predicted from
   * the layer's own error (predict-sensitivity.ts).
   */
  measureAllRungs?: boolean;
  /** Under auto, the other competing methods' rungs too (sensitivity.ts `rivals`). */
  allMethods?: boolean;
  /** Flops a rival rung's fit may cost (PassContext.compareWork; --compare-limit). */
  compareWork?: number;
  /** Intra-op threads of the error runs (sensitivity.ts `threads`). */
  threads?: number;
  /** Reuse these measurements (from a plan file) instead of measuring again. */
  sensitivity?: readonly LayerSensitivity[];
  onProgress?: (done: number, total: number, layer: string) => void;
}

/** Layers under 0.5% of both the params and the MACs are not worth a trial each. */
export const SENSITIVITY_MIN_SHARE = 0.005;

/** The layers a budget may touch (the same filters as a policy run). */
export function eligibleLayers(model: Model, shapes: ShapeMap | undefined, filter: LayerFilter): LayerInfo[] {
  const layers = findLayers(model, shapes);
  const out = filterReasons(layers, filter);
  return layers.filter((l) => !out.has(l));
}

export async function measureAll(model: Model, shapes: ShapeMap | undefined, opts: BudgetedOptions): Promise<LayerSensitivity[]> {
  if (opts.sensitivity) {
    // Latency allocations need each candidate's ORT time; measurements made without timing cannot serve them.
    if (opts.layerLatency && !opts.sensitivity.some((l) => l.ms !== undefined)) {
      throw new LrError('usage', 'the plan\'s sensitivity measurements carry no ORT timings, which this budget needs: make the plan (or report) with --save latency, --layer-latency or --target-latency');
    }
  }
  const eligible = eligibleLayers(model, shapes, opts);
  // A plan's measurements are a cache: the layers it lacks (a larger --heaviest, a smaller
  // --exclude) or measured at other candidate ranks (another --align) are measured now,
  // and those the filters now leave out are dropped.
  const align = rankMultiple(opts.align);
  // A plan's predicted rungs do not serve a run that asks for every rung measured.
  const usable = (s: LayerSensitivity): boolean => s.align === align && !(opts.measureAllRungs && s.candidates.some((c) => c.measured === false));
  const cached = new Map((opts.sensitivity ?? []).filter(usable).map((s) => [s.name, s]));
  const missing = eligible.filter((l) => !cached.has(l.name));
  const fresh = missing.length ? await measureLayers(model, missing, opts) : [];
  const measured = new Map(fresh.map((s) => [s.name, s]));
  return eligible.map((l) => cached.get(l.name) ?? measured.get(l.name)!);
}

function measureLayers(model: Model, layers: readonly LayerInfo[], opts: BudgetedOptions): Promise<LayerSensitivity[]> {
  for (const g of model.allGraphs()) g.topoSort();
  const cx: PassContext = { model, rng: createRng(opts.seed), external: opts.external, shared: new Map(), stats: opts.stats, gemm: opts.gemm, fits: opts.fits, outputSensitivity: opts.outputSensitivity, ...(opts.compareWork !== undefined && { compareWork: opts.compareWork }) };
  return measureSensitivity(model, layers, {
    method: opts.method, align: opts.align, feeds: opts.feeds, reference: opts.reference, cx, onProgress: opts.onProgress,
    totals: opts.totals, minShare: SENSITIVITY_MIN_SHARE,
    latency: opts.layerLatency && { ...opts.layerLatency, external: opts.external }, allRungs: opts.measureAllRungs, rivals: opts.allMethods, threads: opts.threads,
  });
}

/** A plan that applies exactly what the allocation chose. */
export function planFromAllocation(model: string, policy: string, sens: readonly LayerSensitivity[], alloc: Allocation): PlanFile {
  const layers: LayerRecord[] = sens.map((s) => {
    const c = alloc.choices.get(s.name);
    const base = { name: s.name, op: s.op, weightShape: [], where: '', paramsBefore: s.before.params, paramsAfter: s.before.params, ms: 0 };
    if (!c) {
      return { ...base, skipped: true, reason: s.reason ?? (s.candidates.length ? 'left as it was by the budget allocation' : 'no candidate rank') };
    }
    return { ...base, pass: c.pass, ranks: c.ranks, paramsAfter: c.after.params, relError: c.relError };
  });
  return { version: 1, model, policy, layers, sensitivity: [...sens] };
}

export function budgetLabel(b: Budget): string {
  if (b.kind !== 'error') return `target ${b.kind} ${b.fraction}`;
  if (b.top1 !== undefined) return `min top-1 agreement ${b.top1}`;
  const relL2 = `max output error (rel. L2) ${Math.sqrt(b.err2).toPrecision(3)}`;
  return b.cosine !== undefined ? `min output cosine ${b.cosine} (${relL2})` : relL2;
}

export { allocate };

/**
 * Applies the passes to every decomposable layer: the registry picks the pass for each
 * layer (passes/dispatch.ts), which gives ranks (from the policy or from a plan), keeps a
 * rewrite only when its pass says it pays, then removes what became dead. Visits graphs
 * outer to inner and nodes in topological order, so the same input and seed give the same
 * output.
 */
import { LrError } from '../errors.js';
import type { SyncGemm } from '../linalg/engine.js';
import type { Model } from '../graph/graph.js';
import { findLayers, findQuantizedLayers, type LayerInfo } from '../graph/layers.js';
import { findOtherWeights } from '../graph/other-weights.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ExternalReader } from '../onnx/external.js';
import { isSkip, type Applied, type BoundPass, type CostPair, type LayerInputStats, type PassContext, type Skip } from '../rewrite/pass.js';
import { describePolicy, type RankPolicy } from '../rewrite/rank-policy.js';
import { bind } from '../rewrite/registry.js';
import type { FitCache } from '../rewrite/fit-cache.js';
import { createRng } from '../util/rng.js';
import { METHOD_CHOICES, passByName, passesFor, passFor, type MethodChoice } from '../../passes/dispatch.js';
import type { PlannedContender } from './method-latency.js';
import type { LayerRecord, PlanFile } from './plan.js';

export { METHOD_CHOICES, passFor, type MethodChoice };

/**
 * A run's runtime handles: made by the pipeline, not asked for by the user, and they change
 * between stages (a reloaded model's external reader, fresh statistics).
 */
export interface RunContext {
  /** Calibration statistics per layer name: data-aware decomposition where present. */
  stats?: ReadonlyMap<string, LayerInputStats>;
  external?: ExternalReader;
  /** Where the factorizations' large products run (src/linalg/ort-gemm-sync.ts); default JS. */
  gemm?: SyncGemm;
  /** --output-aware: each layer's output-channel sensitivities (PassContext.outputSensitivity). */
  outputSensitivity?: ReadonlyMap<string, Float64Array>;
  onProgress?: (done: number, total: number, layer: string) => void;
  /** Data-aware factorizations kept for the run's later fits at the same ranks (rewrite/fit-cache.ts). */
  fits?: FitCache;
  /**
   * Where auto records, per layer, the choices a later rival replaced on error (the latency
   * screen times them beside the kept one: method-latency.ts preferFaster). Filled only
   * when given.
   */
  contenders?: Map<string, PlannedContender[]>;
}

/**
 * What the user asked for, and only that: the runtime handles travel apart (RunContext),
 * and nothing here is written during a run.
 */
export interface OptimizeOptions {
  readonly method: MethodChoice;
  readonly policy: RankPolicy;
  /** Layers whose node or weight name matches are left alone. */
  readonly exclude?: RegExp;
  /** Layers with fewer weight parameters are left alone. */
  readonly minParams: number;
  /** Of the layers left, only this many with the most MACs (params where MACs are unknown) are considered. */
  readonly heaviest?: number;
  /**
   * Without `heaviest`: of the layers left, only the fewest with the most MACs (params where
   * MACs are unknown) that together carry this share of them (budgets default to 0.95).
   */
  readonly heaviestShare?: number;
  readonly seed: number;
  /**
   * What the run saves: under auto, where latency counts the win of a rival whose chains
   * measured slower than Tucker-2 in ORT (TT, CP-4, grouped CP) notes that the latency
   * screen times it (challenge.ts). Absent: latency.
   */
  readonly saves?: 'params' | 'macs' | 'latency';
  /** Under auto, flops a fit made only to compare methods may cost (PassContext.compareWork; --compare-limit). */
  readonly compareWork?: number;
  /** The user's plan (--plan): apply these decisions exactly instead of choosing ranks. */
  readonly plan?: PlanFile;
  /**
   * Decide passes and ranks (and price them) without rewriting: the records say what would
   * be done; the anchored wave loop (anchored.ts) then applies them.
   */
  readonly decideOnly?: boolean;
}

/** Default: tiny layers cost more in kernel launches than they save. */
export const DEFAULT_MIN_PARAMS = 4096;


export type LayerFilter = Pick<OptimizeOptions, 'exclude' | 'minParams' | 'heaviest' | 'heaviestShare' | 'method'>;

/**
 * Why each layer the user's filters leave alone is left alone (--exclude, --min-params,
 * --heaviest, or the MAC share budgets default to); layers absent from the map may be rewritten.
 */
export function filterReasons(layers: readonly LayerInfo[], f: LayerFilter): Map<LayerInfo, string> {
  const out = new Map<LayerInfo, string>();
  const kept: LayerInfo[] = [];
  for (const l of layers) {
    if (f.exclude && (f.exclude.test(l.name) || f.exclude.test(l.weightName))) out.set(l, 'excluded by --exclude');
    else if (l.params < f.minParams) out.set(l, `${l.params} params < --min-params ${f.minParams}`);
    // Layers no pass takes (ConvTranspose, Gather…) keep their own reason and take no place.
    else if (typeof passFor(l, f.method) !== 'string') kept.push(l);
  }
  if (f.heaviest === undefined && f.heaviestShare === undefined) return out;
  // MACs rank the layers when every one has them (they are what latency follows), else params.
  const byMacs = kept.every((l) => l.macs !== undefined);
  const unit = byMacs ? 'MACs' : 'params';
  const weight = (l: LayerInfo): number => (byMacs ? l.macs! : l.params);
  const order = kept.map((l, i) => ({ l, i })).sort((a, b) => weight(b.l) - weight(a.l) || a.i - b.i);
  let n = f.heaviest ?? order.length;
  let why = `not among the ${n} layers with the most ${unit} (--heaviest ${n})`;
  if (f.heaviest === undefined) {
    const share = f.heaviestShare!;
    const total = kept.reduce((a, l) => a + weight(l), 0);
    let sum = 0;
    for (n = 0; n < order.length && sum < share * total; n++) sum += weight(order[n]!.l);
    if (!(total > 0)) n = order.length;
    why = `not among the ${n} layers carrying ${+(share * 100).toFixed(1)}% of the ${unit} (the default with a budget; --heaviest N sets the number)`;
  }
  for (const { l } of order.slice(n)) out.set(l, why);
  return out;
}

function baseRecord(layer: LayerInfo, macs: number | undefined): LayerRecord {
  return {
    name: layer.name, op: layer.op, weightShape: layer.weightShape, where: layer.where,
    paramsBefore: layer.params, paramsAfter: layer.params, macsBefore: macs, macsAfter: macs, ms: 0,
  };
}

/**
 * Scales per-position costs to absolute MACs with the layer's known MAC count; a layer
 * that ran none (a Gather) counts its positions (looked-up tokens) instead.
 */
function scaleMacs(layer: LayerInfo, c: CostPair): number | undefined {
  if (c.before.macsPerPosition === 0) return layer.positions === undefined ? undefined : layer.positions * c.after.macsPerPosition;
  if (layer.macs === undefined) return undefined;
  return Math.round((layer.macs * c.after.macsPerPosition) / c.before.macsPerPosition);
}

/**
 * `plan` is applied exactly instead of choosing ranks: the user's (--plan) by default, or
 * a budget's allocation, handed over as a value (options stay what the user asked for).
 * `run` holds the runtime handles (none by default: no statistics, payloads inline, JS products).
 */
export function optimizeModel(
  model: Model, shapes: ShapeMap | undefined, opts: OptimizeOptions, plan: PlanFile | undefined = opts.plan, run: RunContext = {},
): LayerRecord[] {
  for (const g of model.allGraphs()) g.topoSort();
  const layers = findLayers(model, shapes);
  const quantized = findQuantizedLayers(model);
  // Nodes holding a constant weight that no layer is (Einsum, 3-D Gather tables, a positional table added…): reported with why, before any rewrite adds nodes.
  const others = findOtherWeights(model, layers, new Set(quantized.map((q) => q.name)));
  const planned = plan ? new Map(plan.layers.map((l) => [l.name, l])) : undefined;
  const cx: PassContext = { model, rng: createRng(opts.seed), external: run.external, shared: new Map(), stats: run.stats, gemm: run.gemm, fits: run.fits, outputSensitivity: run.outputSensitivity, ...(opts.saves && { saves: opts.saves }), ...(opts.compareWork !== undefined && { compareWork: opts.compareWork }) };
  const filteredOut = filterReasons(layers, opts);
  const records: LayerRecord[] = [];
  layers.forEach((layer, i) => {
    run.onProgress?.(i, layers.length, layer.name);
    const t0 = performance.now();
    const rec = baseRecord(layer, layer.macs);
    records.push(rec);
    const done = (reason?: string): void => {
      rec.ms = Math.round((performance.now() - t0) * 10) / 10;
      if (reason !== undefined) { rec.skipped = true; rec.reason = reason; }
    };
    const decision = planned?.get(layer.name);
    // A plan is applied exactly; the filters only explain layers it does not mention.
    const filtered = filteredOut.get(layer);
    if (planned && (!decision || decision.skipped)) {
      // What was compared before the plan dropped it (e.g. auto's rivals, then the latency screen) stays on record.
      if (decision?.note) rec.note = decision.note;
      return done(decision?.reason ?? filtered ?? 'not in the plan');
    }
    if (!planned && filtered) return done(filtered);
    const routed = decision ? passByName(decision.pass!) : passesFor(layer, opts.method);
    if (routed === undefined) return done(`unknown pass ${decision?.pass}`);
    if (typeof routed === 'string') return done(routed);
    const [first, ...rivals] = Array.isArray(routed) ? routed : [routed];
    if (decision && !first!.ops.includes(layer.op)) return done(`plan pass ${first!.name} does not apply to ${layer.op}`);
    rec.pass = first!.name;
    rec.method = first!.method;
    let pass: BoundPass;
    try {
      const b = bind(first!, layer, cx);
      if (isSkip(b)) return done(b.skip);
      pass = b;
    } catch (e) {
      // A weight we cannot read (e.g. NaN/Inf, bad payload) skips the layer, not the model.
      return done((e as Error).message);
    }
    let ranks: number[];
    if (decision) {
      // Out of range, the numerics would clamp (or fail) while the report priced the plan's numbers.
      const bad = pass.rankProblem(decision.ranks!);
      if (bad) throw new LrError('usage', `${plan!.file !== undefined ? `plan ${plan!.file}` : 'the plan'}: layer ${layer.name} (${pass.name}): ${bad}`);
      ranks = decision.ranks!;
    } else {
      let chosen;
      try {
        chosen = pass.chooseRanks(opts.policy);
      } catch (e) {
        return done((e as Error).message);
      }
      if (isSkip(chosen)) return done(chosen.skip);
      ranks = chosen;
    }
    // Under auto, every other pass that takes the layer may challenge the choice so far
    // (conv-cp, then conv-spatial-svd, against conv-tucker2): a winner becomes the choice
    // the next rival meets, and every comparison is noted. A replaced choice is within the
    // winner's error, so it stays a contender when latency decides (run.contenders).
    const compared: string[] = [];
    // Each choice a rival replaced: a contender for the latency screen, and the fallback when the rival declines when made.
    const replaced: { bound: BoundPass; ranks: number[] }[] = [];
    for (const rival of decision || opts.method !== 'auto' ? [] : rivals) {
      const alt = rival.challenge?.(layer, pass, ranks, cx, opts.policy);
      if (!alt) continue;
      compared.push(alt.note);
      if (!alt.use) continue;
      replaced.push({ bound: pass, ranks: [...ranks] });
      ({ bound: pass, ranks } = alt.use);
    }
    if (compared.length > 0) rec.note = compared.join('; ');
    if (replaced.length > 0) run.contenders?.set(layer.name, replaced.map((c): PlannedContender => ({ pass: c.bound.name, ranks: c.ranks })));
    // A plan made in this run (the latency screen's) carries why each layer got its chain
    // (auto's comparison, the timings): the report line says it too. A user's plan file
    // (read from disk) is applied without its notes, which its edits may have made stale.
    if (decision && plan!.file === undefined && typeof decision.note === 'string' && decision.note) rec.note = decision.note;
    rec.pass = pass.name;
    rec.method = pass.method;
    rec.ranks = ranks;
    const cost = pass.cost(ranks);
    rec.paramsAfter = cost.after.params;
    rec.macsAfter = scaleMacs(layer, cost) ?? rec.macsBefore;
    if (!decision && !pass.pays(cost)) {
      rec.paramsAfter = rec.paramsBefore;
      rec.macsAfter = rec.macsBefore;
      return done(`ranks ${ranks.join(',')} do not pay: params ${cost.before.params}→${cost.after.params}, MACs/position ${cost.before.macsPerPosition}→${cost.after.macsPerPosition}`);
    }
    if (opts.decideOnly) return done();
    const applyAt = (p: BoundPass, r: number[]): Applied | Skip => {
      try {
        return p.apply(r, cx);
      } catch (e) {
        return { skip: (e as Error).message };
      }
    };
    let applied = applyAt(pass, ranks);
    /** Notes why the choice declined, and makes `back` the choice (the record priced at it). */
    const giveWay = (back: { bound: BoundPass; ranks: number[] }, why: string, c: CostPair): Applied | Skip => {
      rec.note = rec.note ? `${rec.note}; ${why}` : why;
      ({ bound: pass, ranks } = back);
      rec.pass = pass.name;
      rec.method = pass.method;
      rec.ranks = ranks;
      rec.paramsAfter = c.after.params;
      rec.macsAfter = scaleMacs(layer, c) ?? rec.macsBefore;
      return applyAt(pass, ranks);
    };
    // A rival that won auto's comparison but declines when made (its fit here stays a
    // degenerate CP: never shipped) gives way to the choice it replaced, when that pays.
    while (isSkip(applied) && replaced.length > 0) {
      const back = replaced.pop()!;
      const c = back.bound.cost(back.ranks);
      if (!back.bound.pays(c)) continue;
      applied = giveWay(back, `${pass.method} ${ranks.join(',')} declined (${applied.skip})`, c);
    }
    // A plan made in this run (a budget's allocation, the latency screen's decisions) whose
    // rival declines when made (a CP that stays degenerate: its rung was measured on a quick
    // fit) gives way to the layer's preferred pass at no more params. A user's plan file is
    // applied exactly: the layer is left with the reason.
    const back = isSkip(applied) && decision && plan!.file === undefined ? planFallback(layer, pass, ranks, cx) : undefined;
    if (back && isSkip(applied)) {
      applied = giveWay(back, `${pass.method} ${ranks.join(',')} declined (${applied.skip}); ${back.bound.method} ${back.ranks.join(',')} at no more params instead`, back.bound.cost(back.ranks));
    }
    if (isSkip(applied)) {
      rec.paramsAfter = rec.paramsBefore;
      rec.macsAfter = rec.macsBefore;
      return done(applied.skip);
    }
    rec.relError = applied.relError;
    rec.nodes = applied.nodes;
    if (applied.note) rec.note = rec.note ? `${rec.note}; ${applied.note}` : applied.note;
    if (applied.dataError !== undefined) rec.dataError = applied.dataError;
    done();
  });
  run.onProgress?.(layers.length, layers.length, '');
  for (const q of quantized) {
    records.push({ name: q.name, op: q.op, weightShape: [], where: 'quantized', paramsBefore: 0, paramsAfter: 0, ms: 0, skipped: true, reason: q.reason });
  }
  for (const o of others) {
    records.push({ name: o.name, op: o.op, weightShape: o.weightShape, where: 'not a layer', paramsBefore: 0, paramsAfter: 0, ms: 0, skipped: true, reason: o.reason });
  }
  cleanUp(model);
  return records;
}

/**
 * The layer's preferred pass under auto (Tucker-2 for a kxk conv) at the largest share of
 * params the declined choice kept, when it is another pass and its chain pays; else undefined.
 */
function planFallback(layer: LayerInfo, declined: BoundPass, ranks: readonly number[], cx: PassContext): { bound: BoundPass; ranks: number[] } | undefined {
  const routed = passesFor(layer, 'auto');
  if (typeof routed === 'string' || routed[0]!.name === declined.name) return undefined;
  try {
    const b = bind(routed[0]!, layer, cx);
    if (isSkip(b)) return undefined;
    const limit = declined.cost(ranks);
    const r = b.chooseRanks({ kind: 'ratio', ratio: limit.after.params / Math.max(limit.before.params, 1) });
    if (isSkip(r)) return undefined;
    const c = b.cost(r);
    return c.after.params <= limit.after.params && b.pays(c) ? { bound: b, ranks: r } : undefined;
  } catch {
    return undefined;
  }
}

/** Removes nodes and initializers the rewrites left unused, innermost graphs first. */
export function cleanUp(model: Model): void {
  const graphs = model.allGraphs().reverse();
  for (const g of graphs) g.removeDeadNodes();
  for (const g of graphs) g.removeUnusedInitializers();
}

export function policyLabel(opts: OptimizeOptions): string {
  return opts.plan ? 'plan' : `${opts.method}, ${describePolicy(opts.policy)}`;
}

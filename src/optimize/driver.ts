/**
 * Applies the passes to every decomposable layer: picks the pass for each layer, asks it
 * for ranks (from the policy or from a plan), keeps a rewrite only when it lowers both
 * parameters and MACs, then removes what became dead. Visits graphs outer to inner and
 * nodes in topological order, so the same input and seed give the same output.
 */
import { LrError } from '../errors.js';
import type { SyncGemm } from '../linalg/engine.js';
import { attrInt } from '../graph/attrs.js';
import type { Model } from '../graph/graph.js';
import { findLayers, findQuantizedLayers, type LayerInfo } from '../graph/layers.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ExternalReader } from '../onnx/external.js';
import { isSkip, type Cost, type LayerInputStats, type PassContext } from '../rewrite/pass.js';
import { describePolicy, type RankPolicy } from '../rewrite/rank-policy.js';
import { createRng } from '../util/rng.js';
import { passByName, type AnyPass } from '../../passes/index.js';
import { MIN_ROWS_PER_DIM } from '../../passes/conv-cp.js';
import type { LayerRecord, PlanFile } from './plan.js';

export type MethodChoice = 'auto' | 'svd' | 'tucker2' | 'cp';

export interface OptimizeOptions {
  method: MethodChoice;
  policy: RankPolicy;
  /** Layers whose node or weight name matches are left alone. */
  exclude?: RegExp;
  /** Layers with fewer weight parameters are left alone. */
  minParams: number;
  /** Of the layers left, only this many with the most MACs (params where MACs are unknown) are considered. */
  heaviest?: number;
  seed: number;
  /** Calibration statistics per layer name: data-aware decomposition where present. */
  stats?: ReadonlyMap<string, LayerInputStats>;
  /** Apply these decisions exactly instead of choosing ranks. */
  plan?: PlanFile;
  external?: ExternalReader;
  /** Where the factorizations' large products run (src/linalg/ort-gemm-sync.ts); default JS. */
  gemm?: SyncGemm;
  onProgress?: (done: number, total: number, layer: string) => void;
  /**
   * Decide passes and ranks (and price them) without rewriting: the records say what would
   * be done; the anchored wave loop (anchored.ts) then applies them.
   */
  decideOnly?: boolean;
}

/** rank × kernel elements above which --method auto does not try CP against Tucker-2. */
const MAX_CP_COMPARE_WORK = 5e7;

/** Default: tiny layers cost more in kernel launches than they save. */
export const DEFAULT_MIN_PARAMS = 4096;

const numel = (d: readonly number[]): number => d.reduce((a, b) => a * b, 1);

/** The pass for a layer under a method choice, or the reason there is none. */
export function passFor(layer: LayerInfo, method: MethodChoice): AnyPass | string {
  switch (layer.op) {
    case 'Gemm': return method === 'tucker2' || method === 'cp' ? `--method ${method} does not apply to Gemm` : passByName('gemm-svd')!;
    case 'MatMul': return method === 'tucker2' || method === 'cp' ? `--method ${method} does not apply to MatMul` : passByName('matmul-svd')!;
    case 'Conv': {
      const kernel = layer.weightShape.slice(2);
      const pointwise = kernel.every((k) => k === 1) && attrInt(layer.node, 'group', 1) === 1;
      if (pointwise) return method === 'auto' || method === 'svd' ? passByName('conv1x1-svd')! : passByName(method === 'cp' ? 'conv-cp' : 'conv-tucker2')!;
      if (method === 'svd') return '--method svd applies to 1x1 convs only';
      return passByName(method === 'cp' ? 'conv-cp' : 'conv-tucker2')!;
    }
    case 'ConvTranspose': return 'ConvTranspose is not decomposed yet';
    case 'Gather': return 'embedding tables (Gather) are not decomposed yet';
    default: return `${layer.op} is not decomposable`;
  }
}

export type LayerFilter = Pick<OptimizeOptions, 'exclude' | 'minParams' | 'heaviest' | 'method'>;

/**
 * Why each layer the user's filters leave alone is left alone (--exclude, --min-params,
 * --heaviest); layers absent from the map may be rewritten.
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
  if (f.heaviest !== undefined && kept.length > f.heaviest) {
    // MACs rank the layers when every one has them (they are what latency follows), else params.
    const byMacs = kept.every((l) => l.macs !== undefined);
    const weight = (l: LayerInfo): number => (byMacs ? l.macs! : l.params);
    const order = kept.map((l, i) => ({ l, i })).sort((a, b) => weight(b.l) - weight(a.l) || a.i - b.i);
    for (const { l } of order.slice(f.heaviest)) out.set(l, `not among the ${f.heaviest} layers with the most ${byMacs ? 'MACs' : 'params'} (--heaviest ${f.heaviest})`);
  }
  return out;
}

function baseRecord(layer: LayerInfo, macs: number | undefined): LayerRecord {
  return {
    name: layer.name, op: layer.op, weightShape: layer.weightShape, where: layer.where,
    paramsBefore: layer.params, paramsAfter: layer.params, macsBefore: macs, macsAfter: macs, ms: 0,
  };
}

/** Scales per-position costs to absolute MACs with the layer's known MAC count. */
function scaleMacs(layerMacs: number | undefined, c: { before: Cost; after: Cost }): number | undefined {
  if (layerMacs === undefined || c.before.macsPerPosition === 0) return undefined;
  return Math.round((layerMacs * c.after.macsPerPosition) / c.before.macsPerPosition);
}

export function optimizeModel(model: Model, shapes: ShapeMap | undefined, opts: OptimizeOptions): LayerRecord[] {
  for (const g of model.allGraphs()) g.topoSort();
  const layers = findLayers(model, shapes);
  const quantized = findQuantizedLayers(model);
  const planned = opts.plan ? new Map(opts.plan.layers.map((l) => [l.name, l])) : undefined;
  const cx: PassContext = { model, rng: createRng(opts.seed), external: opts.external, shared: new Map(), stats: opts.stats, gemm: opts.gemm };
  const filteredOut = filterReasons(layers, opts);
  const records: LayerRecord[] = [];
  layers.forEach((layer, i) => {
    opts.onProgress?.(i, layers.length, layer.name);
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
    if (planned && (!decision || decision.skipped)) return done(decision?.reason ?? filtered ?? 'not in the plan');
    if (!planned && filtered) return done(filtered);
    let pass = decision ? passByName(decision.pass!) : passFor(layer, opts.method);
    if (pass === undefined) return done(`unknown pass ${decision?.pass}`);
    if (typeof pass === 'string') return done(pass);
    if (decision && !pass.ops.includes(layer.op)) return done(`plan pass ${pass.name} does not apply to ${layer.op}`);
    rec.pass = pass.name;
    rec.method = pass.method;
    let m;
    try {
      m = pass.match(layer, cx);
    } catch (e) {
      // A weight we cannot read (e.g. NaN/Inf, bad payload) skips the layer, not the model.
      return done((e as Error).message);
    }
    if (isSkip(m)) return done(m.skip);
    let ranks: number[];
    if (decision) {
      // Out of range, the numerics would clamp (or fail) while the report priced the plan's numbers.
      const bad = planRankProblem(pass, m, decision.ranks!);
      if (bad) throw new LrError('usage', `${opts.plan!.file !== undefined ? `plan ${opts.plan!.file}` : 'the plan'}: layer ${layer.name} (${pass.name}): ${bad}`);
      ranks = decision.ranks!;
    } else {
      let chosen;
      try {
        chosen = pass.chooseRanks(m, opts.policy);
      } catch (e) {
        return done((e as Error).message);
      }
      if (isSkip(chosen)) return done(chosen.skip);
      ranks = chosen;
    }
    if (!decision && opts.method === 'auto' && pass.name === 'conv-tucker2') {
      const alt = preferCp(layer, m, ranks, pass, cx);
      if (alt) {
        rec.note = alt.note;
        if (alt.use) ({ pass, m, ranks } = { pass: alt.use.pass, m: alt.use.m, ranks: alt.use.ranks });
        rec.pass = pass.name;
        rec.method = pass.method;
      }
    }
    rec.ranks = ranks;
    const cost = pass.cost(m, ranks);
    rec.paramsAfter = cost.after.params;
    rec.macsAfter = scaleMacs(layer.macs, cost) ?? rec.macsBefore;
    if (!decision && (cost.after.params >= cost.before.params || cost.after.macsPerPosition >= cost.before.macsPerPosition)) {
      rec.paramsAfter = rec.paramsBefore;
      rec.macsAfter = rec.macsBefore;
      return done(`ranks ${ranks.join(',')} do not pay: params ${cost.before.params}→${cost.after.params}, MACs/position ${cost.before.macsPerPosition}→${cost.after.macsPerPosition}`);
    }
    if (opts.decideOnly) return done();
    let applied;
    try {
      applied = pass.apply(m, ranks, cx);
    } catch (e) {
      applied = { skip: (e as Error).message };
    }
    if (isSkip(applied)) {
      rec.paramsAfter = rec.paramsBefore;
      rec.macsAfter = rec.macsBefore;
      return done(applied.skip);
    }
    rec.relError = applied.relError;
    rec.nodes = applied.nodes;
    if (applied.dataError !== undefined) rec.dataError = applied.dataError;
    done();
  });
  opts.onProgress?.(layers.length, layers.length, '');
  for (const q of quantized) {
    records.push({ name: q.name, op: q.op, weightShape: [], where: 'quantized', paramsBefore: 0, paramsAfter: 0, ms: 0, skipped: true, reason: q.reason });
  }
  cleanUp(model);
  return records;
}

/** Why a plan's ranks do not fit the layer (count, integers, range), or undefined. */
function planRankProblem(pass: AnyPass, m: unknown, ranks: readonly number[]): string | undefined {
  const limits = pass.rankLimits(m);
  const names = limits.length === 2 ? ['r1 (input side)', 'r2 (output side)'] : ['rank'];
  if (ranks.length !== limits.length) return `${ranks.length} rank(s) [${ranks.join(', ')}], but ${pass.name} takes ${limits.length}`;
  for (let i = 0; i < limits.length; i++) {
    const r = ranks[i]!;
    if (!Number.isSafeInteger(r) || r < 1 || r > limits[i]!) return `${names[i]} ${r} is out of range: valid ranks are 1 to ${limits[i]}`;
  }
  const k = (m as { geo?: { kernelSize: number } }).geo?.kernelSize ?? 1;
  if (pass.name === 'conv-tucker2' && (ranks[0]! > ranks[1]! * k || ranks[1]! > ranks[0]! * k)) {
    return `ranks [${ranks.join(', ')}] need r1 ≤ r2·${k} and r2 ≤ r1·${k} (the kernel has ${k} taps)`;
  }
  return undefined;
}

/**
 * --method auto on a k×k conv: Tucker-2 unless a CP chain with no more parameters (and no
 * more MACs) reconstructs the weight (with calibration data: the layer's output) at least
 * as well. CP chains run faster in ORT at equal rank (depthwise core), so equal error at
 * equal size favours CP.
 */
function preferCp(layer: LayerInfo, mt: unknown, ranksT: number[], tucker: AnyPass, cx: PassContext):
  { note: string; use?: { pass: AnyPass; m: unknown; ranks: number[] } } | undefined {
  const cp = passByName('conv-cp')!;
  const mc = cp.match(layer, cx);
  if (isSkip(mc)) return undefined;
  const ct = tucker.cost(mt, ranksT);
  if (ct.after.params >= ct.before.params) return undefined;
  let r = 0;
  for (let lo = 1, hi = Math.max(1, ct.after.params); lo <= hi;) {
    const mid = (lo + hi) >> 1;
    const c = cp.cost(mc, [mid]);
    if (c.after.params <= ct.after.params && c.after.macsPerPosition <= ct.after.macsPerPosition) { r = mid; lo = mid + 1; } else hi = mid - 1;
  }
  if (r === 0 || !tucker.estimate || !cp.estimate) return undefined;
  // The comparison costs a CP-ALS fit, about rank × kernel size per product: at rank 760
  // on a 512x256x3x3 kernel that took minutes in JS. Past this size Tucker-2 stays.
  if (r * numel(layer.weightShape) > MAX_CP_COMPARE_WORK) return { note: `cp ${r} not compared (fit too costly at this size)` };
  const fT = tucker.estimate(mt, ranksT, cx);
  const fC = cp.estimate(mc, [r], cx);
  if (isSkip(fT) || isSkip(fC)) return undefined;
  // Data-aware fits are compared by their output error on the calibration statistics,
  // when those determine the patch covariance (else in-sample errors flatter overfits).
  const patchDim = numel(layer.weightShape.slice(1));
  const rows = cx.stats?.get(layer.name)?.count ?? 0;
  const data = fT.dataError !== undefined && fC.dataError !== undefined && rows >= MIN_ROWS_PER_DIM * patchDim;
  const [eT, eC] = data ? [fT.dataError!, fC.dataError!] : [fT.relError, fC.relError];
  const note = `tucker2 ${ranksT.join(',')} ${data ? 'data ' : ''}err ${eT.toExponential(2)} vs cp ${r} err ${eC.toExponential(2)}`;
  // Equal within 2% (or both below 1e-4, where ALS stops) counts as equal.
  return eC <= eT * 1.02 + 1e-4 ? { note, use: { pass: cp, m: mc, ranks: [r] } } : { note };
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

export { numel };

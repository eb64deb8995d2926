/**
 * Which of several rewrites of one layer runs fastest in ORT (issue 19: when latency
 * counts, auto's choice between methods is decided by measured time, not MACs). Fewer MACs
 * is not fewer milliseconds: at equal params, CP's depthwise core ran 1.00–1.73x the time
 * of Tucker-2 (docs/results.md, "Conv decompositions compared").
 *
 * Each contender (a pass and its ranks, all of about the same error: auto's comparison
 * keeps a rival only within the choice's error) is applied to the live graph, its chain cut
 * out as a model at the layer's real input shape, and the graph rolled back (trial.ts);
 * then the layer and every chain are timed together, interleaved, medians
 * (layer-latency.ts `timeChains`), so the load drifts alike over all of them.
 */
import { err, ok, type Result } from '../errors.js';
import type { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import type { SyncGemm } from '../linalg/engine.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ModelProto } from '../onnx/schema.js';
import type { ExternalReader } from '../onnx/external.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { isSkip, type BoundPass, type PassContext } from '../rewrite/pass.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { AUTO, bind } from '../rewrite/registry.js';
import { createRng } from '../util/rng.js';
import { passByName, passesFor } from '../../passes/dispatch.js';
import type { LayerRecord } from './plan.js';
import { chainModel, timeChains, type ChainsTimer } from './layer-latency.js';
import { withRewrite } from './trial.js';

/** One way to rewrite the layer: a pass bound to it and its ranks. */
export interface Contender {
  bound: BoundPass;
  ranks: readonly number[];
}

export interface Fastest {
  /** Index of the fastest contender (the first of equal medians). */
  index: number;
  originalMs: number;
  /** Median ms per contender, in their order (NaN: its chain could not be cut out). */
  ms: number[];
}

export interface FastestOptions {
  threads: number;
  shapes: ShapeMap;
  external?: ExternalBytes;
  /** Default timeChains; tests inject one that does not depend on machine speed. */
  time?: ChainsTimer;
}

/**
 * Times every contender's chain against the layer in one interleaved loop and returns the
 * fastest; an error when no chain could be cut out and timed. `model` is left as it was.
 */
export async function fastestContender(
  model: Model, layer: LayerInfo, contenders: readonly Contender[], cx: PassContext, opts: FastestOptions,
): Promise<Result<Fastest>> {
  const chains: (ModelProto | undefined)[] = [];
  for (const c of contenders) {
    const t = await withRewrite(layer.graph, c.bound, c.ranks, cx, async (_applied, nodes) => chainModel(model, layer, nodes, opts.shapes, opts.external));
    chains.push(isSkip(t) || typeof t === 'string' ? undefined : t);
  }
  const cut = chains.flatMap((m, i) => (m ? [{ m, i }] : []));
  if (cut.length === 0) return err('unsupported', `no chain of ${layer.name} could be cut out to time`);
  const r = await (opts.time ?? timeChains)(model, layer, cut.map((c) => c.m), opts.shapes, { threads: opts.threads, external: opts.external });
  if (!r.ok) return r;
  const ms = contenders.map(() => NaN);
  cut.forEach((c, j) => { ms[c.i] = r.value.candidateMs[j]!; });
  let index = cut[0]!.i;
  for (const c of cut) if (ms[c.i]! < ms[index]!) index = c.i;
  return ok({ index, originalMs: r.value.originalMs, ms });
}

export interface PreferFasterOptions extends Omit<FastestOptions, 'external'> {
  external?: ExternalReader;
  /** The run's rank policy: the preferred pass's ranks the rival was compared against. */
  policy: RankPolicy;
  seed: number;
  gemm?: SyncGemm;
  /**
   * Further contenders of a layer by name, each within the error of the choice it met:
   * the choices a later rival replaced along auto's comparison (e.g. CP, which spatial SVD
   * then beat). Timed beside the kept rival and the preferred pass.
   */
  contenders?: ReadonlyMap<string, readonly PlannedContender[]>;
  onStage?: (stage: string) => void;
  onProgress?: (done: number, total: number, what: string) => void;
}

/** A contender as a decision names it: a pass by name and its ranks. */
export interface PlannedContender {
  pass: string;
  ranks: readonly number[];
}

/**
 * Binds the contenders of a record auto changed by comparison (its pass is not the one
 * routed first): the record's choice, the choices it replaced along the comparison
 * (`others`), and the preferred pass at the policy's ranks; a contender whose chain does
 * not pay (the preferred pass where a rival took the rank policy) is none. Undefined when
 * fewer than two chains are left.
 */
function bindContenders(layer: LayerInfo, rec: LayerRecord, others: readonly PlannedContender[], cx: PassContext, policy: RankPolicy): Contender[] | undefined {
  const routed = passesFor(layer, AUTO);
  if (typeof routed === 'string' || routed[0]!.name === rec.pass) return undefined;
  const bindNamed = (name: string): BoundPass | undefined => {
    const p = passByName(name);
    const b = p && bind(p, layer, cx);
    return b && !isSkip(b) ? b : undefined;
  };
  try {
    const rival = bindNamed(rec.pass!);
    if (!rival) return undefined;
    // The record's choice first (it wins ties), the preferred pass at the policy's ranks last.
    const contenders: Contender[] = [{ bound: rival, ranks: rec.ranks! }];
    const seen = new Set([key(rec.pass!, rec.ranks!)]);
    const pref = bindNamed(routed[0]!.name);
    const prefRanks = pref?.chooseRanks(policy);
    const last = pref && prefRanks && !isSkip(prefRanks) ? { bound: pref, ranks: prefRanks } : undefined;
    if (last) seen.add(key(last.bound.name, last.ranks));
    const add = (c: Contender): void => {
      if (c.bound.rankProblem(c.ranks) || !c.bound.pays(c.bound.cost(c.ranks))) return;
      seen.add(key(c.bound.name, c.ranks));
      contenders.push(c);
    };
    for (const o of others) {
      if (seen.has(key(o.pass, o.ranks))) continue;
      const b = bindNamed(o.pass);
      if (b) add({ bound: b, ranks: o.ranks });
    }
    if (last) add(last);
    return contenders.length > 1 ? contenders : undefined;
  } catch {
    return undefined;
  }
}

const key = (pass: string, ranks: readonly number[]): string => `${pass}|${ranks.join(',')}`;

/**
 * The decisions of an auto run without a budget (optimizeModel with decideOnly), where a
 * rival won auto's comparison on error at no more params and MACs: the rival's chain, the
 * choices it replaced (`contenders`) and the preferred pass's at the policy's ranks (all of
 * about the error the policy asked for) are timed together, and the fastest is kept,
 * whatever its MACs. Other records are returned as they were (a layer with one contender
 * is not timed); `model` is left as it was. The latency screen then judges the kept chain
 * against the layer as before.
 */
export async function preferFaster(
  model: Model, records: readonly LayerRecord[], opts: PreferFasterOptions,
): Promise<{ records: LayerRecord[]; notes: string[] }> {
  const byName = new Map(findLayers(model, opts.shapes).map((l) => [l.name, l]));
  const out = records.map((r) => ({ ...r }));
  const switched: string[] = [];
  const todo = out.filter((r) => !r.skipped && r.pass && r.ranks && byName.has(r.name));
  let announced = false;
  for (const [i, rec] of todo.entries()) {
    const layer = byName.get(rec.name)!;
    const cx: PassContext = { model, rng: createRng(opts.seed), external: opts.external, shared: new Map(), gemm: opts.gemm };
    const contenders = bindContenders(layer, rec, opts.contenders?.get(rec.name) ?? [], cx, opts.policy);
    if (!contenders) continue;
    if (!announced) { opts.onStage?.('timing the methods auto compared, per layer, in ORT'); announced = true; }
    opts.onProgress?.(i, todo.length, rec.name);
    const f = await fastestContender(model, layer, contenders, cx, opts);
    if (!f.ok) continue;
    const timed = `timed in ORT: ${contenders.map((c, j) => `${c.bound.method} ${c.ranks.join(',')} ${fmt(f.value.ms[j]!)} ms`).join(', ')}`;
    rec.note = rec.note ? `${rec.note}; ${timed}` : timed;
    if (f.value.index === 0) continue;
    const won = contenders[f.value.index]!;
    rec.note += `: ${won.bound.method} kept, faster`;
    const rival = contenders[0]!;
    const shown = `${rec.name} (${won.bound.method} ${won.ranks.join(',')} ${fmt(f.value.ms[f.value.index]!)} ms, ${rival.bound.method} ${rival.ranks.join(',')} ${fmt(f.value.ms[0]!)} ms)`;
    const cost = won.bound.cost(won.ranks);
    rec.pass = won.bound.name;
    rec.method = won.bound.method;
    rec.ranks = [...won.ranks];
    rec.paramsAfter = cost.after.params;
    if (layer.macs !== undefined && cost.before.macsPerPosition > 0) rec.macsAfter = Math.round((layer.macs * cost.after.macsPerPosition) / cost.before.macsPerPosition);
    switched.push(shown);
  }
  if (announced) opts.onProgress?.(todo.length, todo.length, '');
  // The run's notes carry the timings: a plan's per-layer notes are not the applied records'.
  const notes = switched.length > 0 ? [`auto: ${switched.length} layer(s) kept another method's chain, timed faster in ORT than the rival that won on error: ${switched.join('; ')}`] : [];
  return { records: out, notes };
}

const fmt = (ms: number): string => (Number.isFinite(ms) ? (ms >= 1 ? ms.toFixed(2) : ms.toFixed(4)) : '?');
